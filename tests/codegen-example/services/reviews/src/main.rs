//! A tiny GraphQL server with async-graphql, a federation subgraph: POST /graphql on
//! 127.0.0.1:$PORT (a minimal HTTP/1.1 server on std's TcpListener, one request a connection),
//! answering `_service { sdl }` and the standard introspection query.
//!   reviews                 serve; prints "reviews: listening on 127.0.0.1:<port>" once it does
//!   reviews --print-schema  print the subgraph SDL as async-graphql prints it for `_service`, and exit
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use async_graphql::{EmptySubscription, Enum, Object, Schema, SimpleObject, ID};

/// How a reviewer rated a product.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
enum Rating {
    Good,
    Bad,
}

/// A review of a product.
#[derive(SimpleObject, Clone)]
struct Review {
    id: ID,
    /// The reviewed product's id.
    product_id: ID,
    body: String,
    rating: Rating,
}

struct Query;

#[Object]
impl Query {
    /// The reviews of a product, newest first.
    async fn reviews(&self, product_id: ID, #[graphql(default = 10)] first: i32) -> Vec<Review> {
        let all = vec![Review {
            id: "r1".into(),
            product_id: "p1".into(),
            body: "Sturdy.".into(),
            rating: Rating::Good,
        }];
        all.into_iter()
            .filter(|r| r.product_id == product_id)
            .take(first.max(0) as usize)
            .collect()
    }

    /// A review by its id (the entity resolver of the subgraph).
    #[graphql(entity)]
    async fn review_by_id(&self, id: ID) -> Option<Review> {
        (id.as_str() == "r1").then(|| Review {
            id,
            product_id: "p1".into(),
            body: "Sturdy.".into(),
            rating: Rating::Good,
        })
    }
}

struct Mutation;

#[Object]
impl Mutation {
    async fn add_review(&self, product_id: ID, body: String, rating: Rating) -> Review {
        Review {
            id: "r2".into(),
            product_id,
            body,
            rating,
        }
    }
}

type ReviewsSchema = Schema<Query, Mutation, EmptySubscription>;

fn answer(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

fn serve(schema: &ReviewsSchema, mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let (mut request_line, mut length) = (String::new(), 0usize);
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    if !request_line.starts_with("POST /graphql ") {
        return answer(
            &mut stream,
            "404 Not Found",
            r#"{"errors":[{"message":"POST /graphql"}]}"#,
        );
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return answer(
                &mut stream,
                "400 Bad Request",
                &serde_json::json!({"errors": [{"message": err.to_string()}]}).to_string(),
            )
        }
    };
    let response = futures_executor::block_on(schema.execute(request));
    let status = if response.data == async_graphql::Value::Null {
        "400 Bad Request"
    } else {
        "200 OK"
    };
    answer(
        &mut stream,
        status,
        &serde_json::to_string(&response).expect("a response serializes"),
    )
}

fn main() -> std::io::Result<()> {
    let schema = Schema::build(Query, Mutation, EmptySubscription)
        .enable_federation()
        .finish();
    if std::env::args().nth(1).as_deref() == Some("--print-schema") {
        print!(
            "{}",
            schema.sdl_with_options(async_graphql::SDLExportOptions::new().federation())
        );
        return Ok(());
    }
    let listener = TcpListener::bind((
        "127.0.0.1",
        std::env::var("PORT")
            .map_err(std::io::Error::other)?
            .parse()
            .map_err(std::io::Error::other)?,
    ))?;
    println!("reviews: listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        if let Err(err) = serve(&schema, stream?) {
            eprintln!("reviews: {err}");
        }
    }
    Ok(())
}
