//! The inventory service: a small HTTP/1.1 server on the standard library.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

/// The answer to one request: status code, content type and body.
pub fn respond(method: &str, path: &str) -> (u16, &'static str, String) {
    match (method, path) {
        ("GET", "/healthz") => (200, "text/plain", "ok\n".to_string()),
        ("GET", "/") => (200, "application/json", "{\"service\":\"inventory\"}\n".to_string()),
        ("GET", _) => (404, "text/plain", "not found\n".to_string()),
        _ => (405, "text/plain", "method not allowed\n".to_string()),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    }
}

fn handle(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let (status, content_type, body) = respond(method, path);
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        status,
        reason(status),
        content_type,
        body.len(),
        body
    )
}

/// Serve connections from `listener` until the process ends, one thread per connection.
pub fn serve(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = handle(stream);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::respond;

    #[test]
    fn healthz_answers_ok() {
        assert_eq!(respond("GET", "/healthz"), (200, "text/plain", "ok\n".to_string()));
    }

    #[test]
    fn unknown_paths_are_404_and_writes_405() {
        assert_eq!(respond("GET", "/nope").0, 404);
        assert_eq!(respond("POST", "/healthz").0, 405);
    }
}
