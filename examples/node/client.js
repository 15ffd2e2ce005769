// A Node client of esd built from the repository's .proto files alone,
// loaded at run time (no generated code): it appends with expected
// revisions, provokes a conflict and decodes the error details, reads the
// stream back and subscribes (history, then a live event). It prints each
// step and exits 1 when anything differs from what esd documents.
//
//   npm ci && node client.js [host:port]     (default $ESD_ADDR or 127.0.0.1:7400)
'use strict';

const path = require('node:path');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The published protos and the google/rpc ones beside them; the
// google/protobuf well-known types come with proto-loader and protobufjs.
const ROOT = path.resolve(__dirname, '..', '..');
const INCLUDE = [path.join(ROOT, 'proto'), path.join(ROOT, 'third_party', 'proto')];
const CALL_TIMEOUT_MS = 10000;

const addr = process.argv[2] || process.env.ESD_ADDR || '127.0.0.1:7400';

// Field names as in the .proto files, uint64 as decimal strings (they may
// pass 2^53), every field present, the set member of a oneof named.
const loadOptions = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

const packageDefinition = protoLoader.loadSync(['esd/v1/stream_service.proto'], {
  ...loadOptions,
  includeDirs: INCLUDE,
});
const esd = grpc.loadPackageDefinition(packageDefinition).esd.v1;

// protobufjs decodes what grpc-js hands over as bytes: the
// grpc-status-details-bin trailer (a google.rpc.Status) and its details.
const types = new protobuf.Root();
types.resolvePath = (origin, target) => {
  for (const dir of INCLUDE) {
    const p = path.join(dir, target);
    if (fs.existsSync(p)) return p;
  }
  return protobuf.util.path.resolve(origin, target); // google/protobuf: bundled
};
types.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto', 'esd/v1/errors.proto'], {
  keepCase: true,
});
const Status = types.lookupType('google.rpc.Status');

function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

function expect(cond, msg) {
  if (!cond) fail(msg);
}

function deadline() {
  return new Date(Date.now() + CALL_TIMEOUT_MS);
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

// statusDetails decodes the google.rpc.Status of a failed call and each
// of its details (google.protobuf.Any) by the type its URL names.
function statusDetails(err) {
  const [bin] = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (!bin) return null;
  const st = Status.decode(bin);
  const details = {};
  for (const any of st.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = types.lookup(name); // null for a detail type not loaded here: skipped
    if (type instanceof protobuf.Type) details[name] = type.toObject(type.decode(any.value), loadOptions);
  }
  return { code: st.code, message: st.message, details };
}

function event(type, body) {
  return { type, data: Buffer.from(JSON.stringify(body)), content_type: 'application/json' };
}

async function main() {
  const client = new esd.StreamService(addr, grpc.credentials.createInsecure());
  const stream = `order-node-${Date.now()}-${process.pid}`;
  console.log(`esd ${addr}, stream ${stream}`);

  // 1. Create the stream: it must not exist yet.
  let res = await unary(client, 'Append', {
    stream,
    no_stream: {},
    events: [event('OrderPlaced', { total: 42 })],
  });
  expect(res.first_revision === '0' && res.last_revision === '0', `first append: revision ${res.last_revision}, want 0`);
  console.log(`appended OrderPlaced at revision ${res.last_revision} (expected no_stream)`);

  // 2. Append at the head we know.
  res = await unary(client, 'Append', { stream, exact: '0', events: [event('OrderPaid', { amount: 42 })] });
  expect(res.last_revision === '1', `second append: revision ${res.last_revision}, want 1`);
  console.log(`appended OrderPaid at revision ${res.last_revision} (expected revision 0)`);

  // 3. A stale writer: still expects revision 0.
  try {
    await unary(client, 'Append', { stream, exact: '0', events: [event('OrderCancelled', {})] });
    fail('an append expecting revision 0 at head 1 succeeded');
  } catch (err) {
    if (err.code === undefined) throw err;
    expect(err.code === grpc.status.ABORTED, `conflict: status ${err.code} (${err.details}), want ABORTED`);
    const st = statusDetails(err);
    expect(st !== null, 'conflict: no grpc-status-details-bin trailer');
    const info = st.details['google.rpc.ErrorInfo'];
    const wrong = st.details['esd.v1.WrongExpectedRevision'];
    expect(info && info.domain === 'esd' && info.reason === 'WRONG_EXPECTED_REVISION', `conflict: ErrorInfo ${JSON.stringify(info)}`);
    expect(info.metadata.stream === stream, `conflict: ErrorInfo metadata stream ${info.metadata.stream}`);
    expect(wrong, `conflict: no esd.v1.WrongExpectedRevision among ${Object.keys(st.details)}`);
    expect(wrong.actual_head === '1' && wrong.stream_exists, `conflict: actual_head ${wrong.actual_head}, want 1`);
    expect(wrong.expected.kind === 'exact' && wrong.expected.exact === '0', `conflict: expected ${JSON.stringify(wrong.expected)}`);
    const since = wrong.events_since.map((e) => `${e.revision} ${e.type}`);
    expect(since.length === 1 && since[0] === '1 OrderPaid', `conflict: events_since ${since}, want [1 OrderPaid]`);
    console.log(
      `conflict: ABORTED reason ${info.reason} actual_head ${wrong.actual_head} ` +
        `expected exact ${wrong.expected.exact} events_since [${since.join(', ')}]`,
    );
  }

  // 4. Read the stream back.
  const read = await new Promise((resolve, reject) => {
    const events = [];
    const call = client.ReadStream({ stream, direction: 'READ_DIRECTION_FORWARD' }, { deadline: deadline() });
    call.on('data', (chunk) => events.push(...chunk.events));
    call.on('error', reject);
    call.on('end', () => resolve(events));
  });
  const got = read.map((e) => `${e.revision} ${e.type} ${e.data.toString()}`);
  expect(
    got.length === 2 && got[0] === '0 OrderPlaced {"total":42}' && got[1] === '1 OrderPaid {"amount":42}',
    `read: ${JSON.stringify(got)}`,
  );
  console.log(`read ${read.length} events: ${read.map((e) => `${e.revision} ${e.type}`).join(', ')}`);

  // 5. Subscribe from the start: the history, caught_up, then a live event.
  await new Promise((resolve, reject) => {
    const seen = [];
    let caughtUp = false;
    let done = false;
    const call = client.Subscribe({ stream, start: {} }, { deadline: deadline() });
    call.on('data', (msg) => {
      switch (msg.content) {
        case 'events':
          for (const e of msg.events.events) seen.push({ revision: e.revision, type: e.type, live: caughtUp });
          if (seen.some((e) => e.live)) {
            done = true;
            call.cancel();
            resolve(seen);
          }
          break;
        case 'caught_up': {
          caughtUp = true;
          const history = seen.map((e) => `${e.revision} ${e.type}`);
          if (history.join(',') !== '0 OrderPlaced,1 OrderPaid') {
            reject(new Error(`subscribe: history ${history}, want 0 OrderPlaced, 1 OrderPaid`));
            return;
          }
          console.log(`subscribe: caught up after ${seen.length} events`);
          unary(client, 'Append', { stream, exact: '1', events: [event('OrderShipped', {})] }).catch(reject);
          break;
        }
        case 'ended':
          reject(new Error(`subscribe: ended early (${msg.ended.reason})`));
          break;
        default:
      }
    });
    call.on('error', (err) => {
      if (!(done && err.code === grpc.status.CANCELLED)) reject(err);
    });
  }).then((seen) => {
    const live = seen.filter((e) => e.live);
    expect(live.length === 1 && live[0].revision === '2' && live[0].type === 'OrderShipped', `subscribe: live ${JSON.stringify(live)}`);
    console.log(`subscribe: live event ${live[0].type} at revision ${live[0].revision}`);
  });

  client.close();
  console.log('ok');
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
