'use strict';

// LegalChat's reference peer: the chat events of the seed (join_room, leave_room,
// send_message with ack, receive_message) on a plain Socket.IO 4.8 server, written the way a
// typical Node team would write it. The load generator drives it with the same scenarios as
// legalchatd, so that the two can be compared. It is deliberately not tuned.
//
// In memory only: nothing survives a restart. One process, one core (no cluster, no adapter).
//
//   node server.js [--port 0] [--host 127.0.0.1]      PEER_JWT_SECRET=... (required)
//
// On startup it prints exactly one line to stdout: {"ready":true,"port":<port>,"pid":<pid>}

const crypto = require('node:crypto');
const http = require('node:http');
const { Server } = require('socket.io');

// Last client_message_ids remembered per room, so that a retried send is acknowledged with its
// original seq instead of being delivered twice. Bounded: a long load run must not grow it.
const DEDUP_WINDOW = 1024;

function parseArgs(argv) {
  const options = {
    port: Number(process.env.PEER_PORT ?? 0),
    host: process.env.PEER_HOST ?? '127.0.0.1',
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case '--port':
        options.port = Number(value());
        break;
      case '--host':
        options.host = value();
        break;
      default:
        fail(`unknown argument ${argv[i]} (usage: server.js [--port 0] [--host 127.0.0.1])`);
    }
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    fail('--port must be an integer between 0 and 65535');
  }
  if (!options.host) fail('--host must not be empty');
  return options;
}

function fail(message) {
  console.error(`socketio-peer: ${message}`);
  process.exit(2);
}

// HS256 JWT verification with node's own crypto: signature, then exp, then sub.
// Returns the claims, or null for anything that is not a valid, unexpired token.
function verifyJwt(token, secret) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [encodedHeader, encodedPayload, encodedSignature] = parts;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(encodedHeader, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(encodedPayload, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  // Only HS256: accepting the header's choice of algorithm ("none") is the classic JWT hole.
  if (!header || header.alg !== 'HS256') return null;
  const expected = crypto.createHmac('sha256', secret).update(`${encodedHeader}.${encodedPayload}`).digest();
  const signature = Buffer.from(encodedSignature, 'base64url');
  if (signature.length !== expected.length || !crypto.timingSafeEqual(signature, expected)) return null;
  if (!claims || typeof claims.exp !== 'number' || claims.exp <= Date.now() / 1000) return null;
  if (typeof claims.sub !== 'string' || claims.sub === '') return null;
  return claims;
}

const options = parseArgs(process.argv.slice(2));
const secret = process.env.PEER_JWT_SECRET;
if (!secret) fail('PEER_JWT_SECRET is not set');

// room name -> { seq, recent: Map<client_message_id, seq> }
const rooms = new Map();

function roomState(room) {
  let state = rooms.get(room);
  if (!state) {
    state = { seq: 0, recent: new Map() };
    rooms.set(room, state);
  }
  return state;
}

function isNonEmptyString(value) {
  return typeof value === 'string' && value.length > 0;
}

const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false });

io.use((socket, next) => {
  const claims = verifyJwt(socket.handshake.auth?.token, secret);
  if (!claims) return next(new Error('unauthorized'));
  socket.data.userId = claims.sub;
  next();
});

io.on('connection', (socket) => {
  const userId = socket.data.userId;

  socket.on('join_room', async (payload, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    const room = payload?.room;
    if (!isNonEmptyString(room)) return reply({ error: 'room is required' });
    try {
      socket.join(room);
      const sockets = await io.in(room).fetchSockets();
      const users = [...new Set(sockets.map((s) => s.data.userId))];
      reply({ ok: true, users });
    } catch (err) {
      reply({ error: err.message });
    }
  });

  socket.on('leave_room', (payload, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    const room = payload?.room;
    if (!isNonEmptyString(room)) return reply({ error: 'room is required' });
    socket.leave(room);
    reply({ ok: true });
  });

  socket.on('send_message', (payload, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    const { room, client_message_id: clientMessageId, text } = payload ?? {};
    if (!isNonEmptyString(room)) return reply({ error: 'room is required' });
    if (!isNonEmptyString(clientMessageId)) return reply({ error: 'client_message_id is required' });
    if (typeof text !== 'string') return reply({ error: 'text must be a string' });
    if (!socket.rooms.has(room)) return reply({ error: 'not in room' });

    const state = roomState(room);
    const previous = state.recent.get(clientMessageId);
    if (previous !== undefined) return reply({ seq: previous });

    state.seq += 1;
    const seq = state.seq;
    state.recent.set(clientMessageId, seq);
    if (state.recent.size > DEDUP_WINDOW) {
      // Maps iterate in insertion order: the first key is the oldest.
      state.recent.delete(state.recent.keys().next().value);
    }

    socket.to(room).emit('receive_message', {
      room,
      seq,
      sender: userId,
      client_message_id: clientMessageId,
      text,
      sent_at_ms: Date.now(),
    });
    reply({ seq });
  });
});

httpServer.on('error', (err) => fail(`cannot listen on ${options.host}:${options.port}: ${err.message}`));

httpServer.listen(options.port, options.host, () => {
  const { port } = httpServer.address();
  // Writes to a pipe are synchronous on Linux, so the line is out before anyone connects.
  process.stdout.write(`${JSON.stringify({ ready: true, port, pid: process.pid })}\n`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.error(`socketio-peer: ${signal}, closing`);
  // A connection that will not close must not hold the exit hostage.
  setTimeout(() => process.exit(0), 5000).unref();
  io.close(() => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
