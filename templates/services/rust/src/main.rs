//! Runs the __NAME__ service on $PORT (default 8080), on every interface.

use std::net::TcpListener;

fn port() -> u16 {
    std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080)
}

fn main() {
    let address = format!("0.0.0.0:{}", port());
    let listener = TcpListener::bind(&address).unwrap_or_else(|e| {
        eprintln!("__NAME__: cannot listen on {}: {}", address, e);
        std::process::exit(1)
    });
    eprintln!("__NAME__: listening on {}", address);
    __IDENT__::serve(listener);
}

#[cfg(test)]
mod tests {
    #[test]
    fn port_defaults_to_8080() {
        std::env::remove_var("PORT");
        assert_eq!(super::port(), 8080);
    }
}
