// Runs the web service on $PORT (default 8080).
"use strict";

const { createServer } = require("./app");

const port = Number(process.env.PORT || 8080);
createServer().listen(port, () => console.error(`web: listening on port ${port}`));
