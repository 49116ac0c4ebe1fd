"use strict";
// A tiny GraphQL server with graphql-js and node's own http module: POST /graphql on
// 127.0.0.1:$PORT, answering the standard introspection query; not a federation subgraph.
//   node server.js                 serve; prints "books: listening on 127.0.0.1:<port>" once it does
//   node server.js --print-schema  print the schema as graphql-js prints it (sorted, as Forge writes
//                                  introspected schemas), and exit
const http = require("http");
const { buildSchema, graphql, lexicographicSortSchema, printSchema, version } = require("graphql");

const schema = buildSchema(`
  """A book on the shelf."""
  type Book {
    isbn: ID!
    title: String!
    "Who wrote it, as printed on the cover."
    author: String
    format: Format!
  }

  enum Format {
    HARDCOVER
    PAPERBACK
    EBOOK @deprecated(reason: "no longer sold")
  }

  input NewBook {
    isbn: ID!
    title: String!
    format: Format = PAPERBACK
  }

  type Query {
    book(isbn: ID!): Book
    books(first: Int = 20, after: ID): [Book!]!
  }

  type Mutation {
    addBook(book: NewBook!): Book!
  }
`);

const shelf = [{ isbn: "978-0", title: "GraphQL in Action", author: "Samer Buna", format: "PAPERBACK" }];
const rootValue = {
  book: ({ isbn }) => shelf.find((b) => b.isbn === isbn) || null,
  books: ({ first, after }) => shelf.slice(after ? shelf.findIndex((b) => b.isbn === after) + 1 : 0).slice(0, first),
  addBook: ({ book }) => (shelf.push({ author: null, ...book }), shelf[shelf.length - 1]),
};

function answer(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url.split("?")[0] !== "/graphql") {
    return answer(res, 404, { errors: [{ message: "POST /graphql" }] });
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    let request;
    try {
      request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (err) {
      return answer(res, 400, { errors: [{ message: `the body is not JSON: ${err.message}` }] });
    }
    const { query, variables, operationName } = request;
    const result = await graphql({ schema, source: String(query), rootValue, variableValues: variables, operationName });
    answer(res, result.data === undefined ? 400 : 200, result);
  });
});

if (process.argv[2] === "--print-schema") {
  process.stdout.write(printSchema(lexicographicSortSchema(schema)) + "\n");
} else {
  server.listen(Number(process.env.PORT), "127.0.0.1", () => {
    const { address, port } = server.address();
    process.stdout.write(`books: listening on ${address}:${port} (graphql ${version})\n`);
  });
}
