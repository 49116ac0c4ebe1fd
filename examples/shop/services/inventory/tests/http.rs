//! Integration: the real server on a loopback port, spoken to over TCP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", path).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

#[test]
fn healthz_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || inventory::serve(listener));
    let answer = get(port, "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{}", answer);
    assert!(answer.ends_with("\r\n\r\nok\n"), "{}", answer);
    assert!(get(port, "/missing").starts_with("HTTP/1.1 404 "));
}
