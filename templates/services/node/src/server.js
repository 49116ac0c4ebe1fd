// Runs the __NAME__ service on $PORT (default 8080).
"use strict";

const { createServer } = require("./app");

const port = Number(process.env.PORT || 8080);
createServer().listen(port, () => console.error(`__NAME__: listening on port ${port}`));
