// Compiled by test/types.test.js with `tsc --strict`: the CommonJS entry
// (the `require` condition) has the same types.
import herald = require('@heraldhub/client');

const client: herald.Herald = new herald.Herald('ws://127.0.0.1:8080/ws');
const viaDefault: herald.Herald = new herald.default('ws://127.0.0.1:8080/ws');
const stats: Promise<herald.PresenceStats> = client.presenceStats('room:1');
const code: 5 = herald.HeraldError.QUEUE_FULL;
// @ts-expect-error not JSON
client.publish('c', 1n);

export = { client, viaDefault, stats, code };
