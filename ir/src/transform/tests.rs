//! Hand-computed examples of every scheme (from the digests of the specified stream), and
//! the properties: bijection, key dependence, errors.

use proptest::prelude::*;

use super::*;

/// The key of the hand-computed examples: bytes 0, 1, ..., 31.
fn key0() -> TransformKey {
    TransformKey::from_bytes(std::array::from_fn(|i| i as u8))
}

#[test]
fn etc_hand_computed() {
    // Key 0..31, a 4x4 image, 2x2 tiles t = 0..4 (row-major). The streams start with (first
    // little-endian u32s of SHA-256(key || domain || 0u64), computed with Python's hashlib):
    //   positions: 1675127281, 61679226, 264067630
    //     i=3: uniform(4) = 1675127281 mod 4 = 1, swap a[3], a[1] -> [0, 3, 2, 1]
    //     i=2: uniform(3) = 61679226 mod 3 = 0 (accepted: < 2^32 - 1), -> [2, 3, 0, 1]
    //     i=1: uniform(2) = 264067630 mod 2 = 0, -> P = [3, 2, 0, 1]
    //   rotation: 2934034820, 465302197, 3668928435, 1046386071 mod 4 -> r = [0, 1, 3, 3]
    //   flip: first byte 0x06 -> bits (LSB first) f = [0, 1, 1, 0]
    //   negate: first byte 0xe5 -> g = [1, 0, 1, 0]
    let image = [11, 12, 13, 14, 21, 22, 23, 24, 31, 32, 33, 34, 41, 42, 43, 44];
    // out0 = tile 3 [[33,34],[43,44]], negated.
    // out1 = tile 2 [[31,32],[41,42]] rotated 90° ([[41,31],[42,32]]), mirrored.
    // out2 = tile 0 [[11,12],[21,22]] rotated 270° ([[12,22],[11,21]]), mirrored
    //        ([[22,12],[21,11]]), negated.
    // out3 = tile 1 [[13,14],[23,24]] rotated 270°.
    #[rustfmt::skip]
    let expected = [
        222, 221, 31, 41,
        212, 211, 32, 42,
        233, 243, 14, 24,
        234, 244, 13, 23,
    ];
    let t = Transform::Etc { block: 2 };
    assert_eq!(t.apply(&key0(), &image, 4, 4).unwrap(), expected);
    assert_eq!(t.invert(&key0(), &expected, 4, 4).unwrap(), image);
}

#[test]
fn skk_hand_computed() {
    // skk/negate starts with bytes 0x70 0x06: bits 4, 5, 6 (0x70) and 9, 10 (0x06) are set.
    let image: Vec<u8> = (0..15).map(|i| 16 * i + 1).collect();
    let expected = [1, 17, 33, 49, 190, 174, 158, 113, 129, 110, 94, 177, 193, 209, 225];
    let t = Transform::Skk;
    assert_eq!(t.apply(&key0(), &image, 3, 5).unwrap(), expected);
    assert_eq!(t.invert(&key0(), &expected, 3, 5).unwrap(), image);
}

#[test]
fn tanaka_hand_computed() {
    // A 2x4 image, 2x2 tiles: 8 sub-pixels per tile, j = c*4 + y*2 + x.
    //   shuffle: u32s 1934833034, 4140710712, 254687891, 478737682, 3785500615, 1001622005,
    //   3823837887: i=7: mod 8 = 2 -> [0,1,7,3,4,5,6,2]; i=6: mod 7 = 5 -> [0,1,7,3,4,6,5,2];
    //   i=5: mod 6 = 5; i=4: mod 5 = 2 -> [0,1,4,3,7,6,5,2]; i=3: mod 4 = 3; i=2: mod 3 = 2;
    //   i=1: mod 2 = 1: S = [0, 1, 4, 3, 7, 6, 5, 2]
    //   negate: first byte 0x3c -> g = [0, 0, 1, 1, 1, 1, 0, 0]
    let image = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
    // Left tile sub-pixels [1, 3, 9, 11, 2, 4, 10, 12] -> [1, 3, 15-2, 15-11, 15-12, 15-10, 4, 9];
    // right tile [5, 7, 13, 15, 6, 8, 14, 0] -> [5, 7, 15-6, 15-15, 15-0, 15-14, 8, 13].
    #[rustfmt::skip]
    let expected = [
        1, 3, 5, 7,
        13, 4, 9, 0,
        3, 5, 15, 1,
        4, 9, 8, 13,
    ];
    let t = Transform::Tanaka { block: 2 };
    assert_eq!(t.output_shape(2, 4).unwrap(), [2, 2, 4]);
    assert_eq!(t.apply(&key0(), &image, 2, 4).unwrap(), expected);
    assert_eq!(t.invert(&key0(), &expected, 2, 4).unwrap(), image);
}

/// Every scheme at block sizes that divide `h` and `w`.
fn schemes_for(h: usize, w: usize) -> Vec<Transform> {
    let mut v = vec![Transform::Skk];
    for b in 1..=h.min(w) as u32 {
        if h.is_multiple_of(b as usize) && w.is_multiple_of(b as usize) {
            v.push(Transform::Etc { block: b });
            v.push(Transform::Tanaka { block: b });
        }
    }
    v
}

fn key_strategy() -> impl Strategy<Value = TransformKey> {
    any::<[u8; 32]>().prop_map(TransformKey::from_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The map is a permutation of positions, apply then invert gives the image back, and
    /// two different images give two different outputs.
    #[test]
    fn bijection(key in key_strategy(), h in 1usize..13, w in 1usize..13, seed in any::<u64>()) {
        let mut s = seed | 1;
        let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 24) as u8 };
        let image: Vec<u8> = (0..h * w).map(|_| next()).collect();
        for t in schemes_for(h, w) {
            let plan = t.plan(&key, h, w).unwrap();
            let mut seen = vec![false; plan.src.len()];
            for &i in &plan.src {
                prop_assert!(!std::mem::replace(&mut seen[i as usize], true), "{t}: source {i} used twice");
            }
            let out = t.apply(&key, &image, h, w).unwrap();
            prop_assert_eq!(out.len(), plan.shape.iter().product::<usize>());
            prop_assert!(out.iter().all(|&v| v <= plan.max));
            prop_assert_eq!(&t.invert(&key, &out, h, w).unwrap(), &image, "{}", t);
            // Injective: changing any one pixel changes the output.
            let i = (next() as usize) % image.len();
            let mut other = image.clone();
            other[i] = other[i].wrapping_add(1 + next() % 255);
            prop_assert_ne!(t.apply(&key, &other, h, w).unwrap(), out, "{}", t);
        }
    }
}

#[test]
fn every_u8_image_of_a_tiny_size_maps_to_a_distinct_output() {
    // All 2^16 images of 1x2 pixels: the outputs are pairwise distinct.
    for t in [Transform::Skk, Transform::Etc { block: 1 }, Transform::Tanaka { block: 1 }] {
        let plan = t.plan(&key0(), 1, 2).unwrap();
        let mut outs: Vec<Vec<u8>> = (0..=u16::MAX).map(|v| t.apply_plan(&plan, &v.to_le_bytes()).unwrap()).collect();
        outs.sort();
        outs.dedup();
        assert_eq!(outs.len(), 1 << 16, "{t}");
    }
}

#[test]
fn another_key_gives_another_image() {
    let image: Vec<u8> = (0..28 * 28).map(|i| (i * 7 % 256) as u8).collect();
    let other = TransformKey::from_bytes([0x5a; 32]);
    for t in [Transform::Etc { block: 4 }, Transform::Etc { block: 7 }, Transform::Skk, Transform::Tanaka { block: 4 }]
    {
        let a = t.apply(&key0(), &image, 28, 28).unwrap();
        let b = t.apply(&other, &image, 28, 28).unwrap();
        assert_ne!(a, b, "{t}");
        assert_ne!(t.invert(&other, &a, 28, 28).unwrap(), image, "{t}: the wrong key does not invert");
        // The same key gives the same image every time.
        assert_eq!(t.apply(&key0(), &image, 28, 28).unwrap(), a, "{t}");
    }
}

#[test]
fn errors_name_the_problem() {
    let k = key0();
    let e = Transform::Etc { block: 3 }.apply(&k, &[0; 28 * 28], 28, 28).unwrap_err();
    assert_eq!(e, TransformError::NotBlocks { scheme: Transform::Etc { block: 3 }, h: 28, w: 28, block: 3 });
    assert!(
        e.to_string()
            .starts_with("etc:3: the image's height (28) and width (28) must be multiples of the block size 3")
    );
    let e = Transform::Tanaka { block: 4 }.apply(&k, &[0; 8 * 6], 8, 6).unwrap_err();
    assert!(matches!(e, TransformError::NotBlocks { h: 8, w: 6, block: 4, .. }), "{e}");
    let e = Transform::Etc { block: 0 }.apply(&k, &[0; 4], 2, 2).unwrap_err();
    assert_eq!(e.to_string(), "etc:0: the block size must be at least 1");
    let e = Transform::Skk.apply(&k, &[0; 5], 2, 3).unwrap_err();
    assert_eq!(e.to_string(), "skk: 5 values given for an image of 6 values");
    let e = Transform::Tanaka { block: 1 }.invert(&k, &[0; 6], 2, 3).unwrap_err();
    assert_eq!(e.to_string(), "tanaka:1: 6 values given for a transformed image of 12 values");
    let e = Transform::Tanaka { block: 1 }.invert(&k, &[0, 0, 16, 0], 1, 2).unwrap_err();
    assert_eq!(e.to_string(), "tanaka:1: value 16 at index 2 is not a transformed value (0 to 15)");
    for (h, w) in [(0, 4), (4, 0), (4097, 4097), (usize::MAX, 2)] {
        let e = Transform::Skk.output_shape(h, w).unwrap_err();
        assert_eq!(e, TransformError::Size { scheme: Transform::Skk, h, w });
    }
}

#[test]
fn names_round_trip_and_refuse_others() {
    for t in [Transform::Etc { block: 4 }, Transform::Skk, Transform::Tanaka { block: 16 }] {
        assert_eq!(t.to_string().parse::<Transform>(), Ok(t));
    }
    assert_eq!("etc:4".parse(), Ok(Transform::Etc { block: 4 }));
    for bad in ["", "etc", "etc:", "etc:0", "etc:04", "etc:+4", "etc:-1", "etc:4:4", "skk:2", "tanaka", "EtC:4", "none"]
    {
        let e = bad.parse::<Transform>().unwrap_err();
        assert_eq!(e, UnknownTransform(bad.into()));
        assert!(e.to_string().contains("expected etc:B, skk or tanaka:B"), "{e}");
    }
}

#[test]
fn image_size_of_a_model_input() {
    let etc = Transform::Etc { block: 4 };
    let tanaka = Transform::Tanaka { block: 4 };
    assert_eq!(etc.image_size(&[1, 1, 28, 28]), Ok((28, 28)));
    assert_eq!(Transform::Skk.image_size(&[28, 28]), Ok((28, 28)));
    assert_eq!(tanaka.image_size(&[1, 2, 28, 28]), Ok((28, 28)));
    let e = tanaka.image_size(&[1, 1, 28, 28]).unwrap_err();
    assert!(matches!(e, TransformError::InputShape { .. }), "{e}");
    assert!(e.to_string().contains("tanaka:4 of an h x w image gives 2 channels"), "{e}");
    assert!(e.to_string().contains("[1, 1, 28, 28]"), "{e}");
    assert!(matches!(etc.image_size(&[784]), Err(TransformError::InputShape { .. })));
    assert!(matches!(etc.image_size(&[1, 2, 28, 28]), Err(TransformError::InputShape { .. })));
    assert!(matches!(etc.image_size(&[1, 1, 28, 30]), Err(TransformError::NotBlocks { .. })));
    assert!(matches!(etc.image_size(&[usize::MAX, 2, 4, 4]), Err(TransformError::InputShape { .. })));
}

#[test]
fn model_input_widens_tanaka_values() {
    let key = key0();
    let image: Vec<u8> = (0..16u32).map(|i| (i * 17) as u8).collect();
    let t = Transform::Tanaka { block: 2 };
    let plan = t.plan(&key, 4, 4).unwrap();
    let raw = t.apply_plan(&plan, &image).unwrap();
    let wide = t.model_input(&plan, &image).unwrap();
    assert_eq!(wide, raw.iter().map(|v| v * 17).collect::<Vec<_>>());
    let e = Transform::Etc { block: 2 };
    let plan = e.plan(&key, 4, 4).unwrap();
    assert_eq!(e.model_input(&plan, &image).unwrap(), e.apply_plan(&plan, &image).unwrap());
}
