// Graphile Worker's side of scripts/bench-queue.py: N no-op jobs on a Postgres
// database, timed from the first job added (or from the worker's start, when
// the jobs were inserted first) to the last job done. Prints one JSON line.
//
//   node graphile.mjs URL one|bulk N CONCURRENCY LOCAL_QUEUE
//
// one:  the worker runs while the jobs are added one `addJob` call at a time;
// bulk: the jobs are inserted in one `addJobs` call first, then the worker
//       starts. LOCAL_QUEUE > 0 turns on its local queue (jobs fetched in
//       batches of that size), its setting for throughput.
import { createRequire } from "node:module";

const require = createRequire(process.env.GRAPHILE_MODULES + "/");
const { run, makeWorkerUtils } = require("graphile-worker");

const [url, mode, nText, concurrencyText, localQueueText] = process.argv.slice(2);
const n = Number(nText);
const concurrency = Number(concurrencyText);
const localQueue = Number(localQueueText);

const utils = await makeWorkerUtils({ connectionString: url });
await utils.migrate();

let done = 0;
let finished;
const allDone = new Promise((resolve) => (finished = resolve));
const taskList = {
  noop: async () => {
    done += 1;
    if (done === n) finished(process.hrtime.bigint());
  },
};
const preset = localQueue > 0 ? { worker: { localQueue: { size: localQueue } } } : undefined;
const options = {
  connectionString: url,
  concurrency,
  noHandleSignals: true,
  pollInterval: 1000,
  taskList,
  logger: undefined,
  preset,
};
// Quiet: its log lines are not the measurement.
const { Logger } = require("graphile-worker");
options.logger = new Logger(() => () => {});

let start;
let runner;
if (mode === "bulk") {
  const specs = Array.from({ length: n }, (_, i) => ({ identifier: "noop", payload: { item: i } }));
  await utils.addJobs(specs);
  start = process.hrtime.bigint();
  runner = await run(options);
} else {
  runner = await run(options);
  start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    await utils.addJob("noop", { item: i });
  }
}
const end = await allDone;
await runner.stop();
await utils.release();
console.log(JSON.stringify({ seconds: Number(end - start) / 1e9, done }));
