//! One TCP transfer of a file, for the tests that check what arrives byte
//! for byte (iperf3's `-F` does not keep every octet):
//! `tcp-transfer listen|connect ADDRESS send|receive FILE`. The side that
//! sends closes its half when the file is through; the side that receives
//! writes everything until then to FILE.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, address, direction, file] = &args[..] else {
        eprintln!("usage: tcp-transfer listen|connect ADDRESS send|receive FILE");
        std::process::exit(2);
    };
    let stream = match role.as_str() {
        "listen" => {
            let listener = TcpListener::bind(address).expect("bind");
            listener.accept().expect("accept").0
        }
        "connect" => TcpStream::connect(address).expect("connect"),
        other => panic!("{other}: listen or connect"),
    };
    match direction.as_str() {
        "send" => {
            let data = std::fs::read(file).expect("read the file");
            (&stream).write_all(&data).expect("send");
            stream.shutdown(Shutdown::Write).expect("shutdown");
            // Until the peer has read it all and closes.
            let _ = (&stream).read(&mut [0u8; 1]);
        }
        "receive" => {
            let mut data = Vec::new();
            (&stream).read_to_end(&mut data).expect("receive");
            std::fs::write(file, &data).expect("write the file");
        }
        other => panic!("{other}: send or receive"),
    }
}
