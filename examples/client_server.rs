//! A client and a server that share nothing but bytes over a TCP socket.
//!
//! ```sh
//! cargo run --example client_server            # 2 bundled MNIST images
//! cargo run --example client_server -- 5       # 5 images
//! ```
//!
//! The server thread knows the compiled model (the full artifact: circuit and weights) and
//! receives the client's evaluation key; it never sees the secret key, the image or the
//! class. The client never sees the weights: it loads only the artifact's client part (the
//! parameters and the input and output encodings, what `fhec build` writes as
//! `MODEL.client.fhec`), keeps the secret key, encrypts each image, and decrypts the
//! server's answer. Every message is a length-prefixed byte string; keys and ciphertexts are
//! framed, checksummed and tied to the model's parameters by `fhec_runtime::app`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use fhec_compiler::{BuildOptions, build};
use fhec_runtime::app::{Client, Server};
use fhec_runtime::dataset::{DatasetKind, bundled_sample};

/// The bundled network made for encrypted inference.
const MODEL: &[u8] = include_bytes!("models/fhe_mnist.onnx");

fn send(s: &mut TcpStream, b: &[u8]) -> std::io::Result<()> {
    s.write_all(&(b.len() as u64).to_le_bytes())?;
    s.write_all(b)
}

fn recv(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > 1 << 32 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("message of {len} bytes refused")));
    }
    let mut b = vec![0u8; len as usize];
    s.read_exact(&mut b)?;
    Ok(b)
}

/// The server: one connection; first message the evaluation key, then encrypted images.
fn serve(listener: TcpListener, artifact: Vec<u8>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (mut conn, _) = listener.accept()?;
    let server = Server::new(&artifact, &recv(&mut conn)?)?;
    loop {
        let image = match recv(&mut conn) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let t = std::time::Instant::now();
        let result = server.classify(&image)?;
        eprintln!("[server] classified an encrypted image in {:.1} s", t.elapsed().as_secs_f64());
        send(&mut conn, &result)?;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let images: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(2);
    // Compile the model (the same artifact `fhec build examples/models/fhe_mnist.onnx` writes).
    let calib = bundled_sample(DatasetKind::Mnist);
    let px: Vec<&[u8]> = (0..calib.len()).map(|i| calib.pixels(i)).collect();
    let opts = BuildOptions { calibration_name: "bundled mnist sample".into(), ..Default::default() };
    let compiled = build(MODEL, "fhe_mnist.onnx", &px, &opts)?;
    // What the model owner ships to clients: no weights (the `fhec build` client part).
    let client_part = compiled.client_part()?.to_bytes();
    let artifact = compiled.to_bytes();

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server_artifact = artifact.clone();
    let server = std::thread::spawn(move || serve(listener, server_artifact));

    // The client, from the client part alone.
    let client = Client::new(&client_part)?;
    let mut conn = TcpStream::connect(addr)?;
    let key = client.evaluation_key();
    println!("[client] sending the evaluation key ({:.1} MiB)", key.len() as f64 / 1048576.0);
    send(&mut conn, &key)?;
    let ds = bundled_sample(DatasetKind::Mnist);
    for i in 0..images.min(ds.len()) {
        let ct = client.encrypt(ds.pixels(i))?;
        send(&mut conn, &ct)?;
        let result = recv(&mut conn)?;
        let pred = client.decrypt(&result)?;
        println!(
            "[client] image {i}: sent {:.1} KiB, received {:.1} KiB, class {} (label {})",
            ct.len() as f64 / 1024.0,
            result.len() as f64 / 1024.0,
            pred.class,
            ds.labels[i]
        );
    }
    drop(conn);
    server.join().map_err(|_| "server thread panicked")??;
    Ok(())
}
