"use strict";
/*
Baseline for tests/perf/bench.py: CleverTap's official Node library (npm `clevertap`, 1.3.0)
uploading what the Python tool's `upload` command uploads.

    node node_baseline.js EVENTS.ndjson      (run with the library installed in the cwd)

Environment: CLEVERTAP_ENDPOINT (the sandbox's base URL), CLEVERTAP_PROJECT_ID,
CLEVERTAP_PASSCODE. It reads the file line by line, maps every event with a userId and
traits (or properties) to a CleverTap profile record the way User Upload does, skips events
whose Phone is not +[country code][number], and hands the records to the library's
`upload(records, {batchSize: 100})`, 1000 at a time. The library itself sends 100 records per
request, one request at a time, and parses the answer without looking at its HTTP status,
so every answer is checked here: anything but {"status": "success"} ends the run with exit 1.

The library hard-codes https://<region>.api.clevertap.com/1 in `clevertap.api.apiEndpoint`;
it is pointed at the sandbox by setting that attribute after CleverTap.init().
*/
const fs = require("fs");
const readline = require("readline");

const CleverTap = require(require.resolve("clevertap", { paths: [process.cwd(), __dirname] }));

const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;
const PHONE = /^\+[1-9]\d{6,14}$/;
const KEYS = {
  name: "Name",
  email: "Email",
  phone: "Phone",
  gender: "Gender",
  birthday: "DOB",
  avatar: "Photo",
};
const GENDERS = { male: "M", female: "F", other: "O", m: "M", f: "F", o: "O" };
const PER_CALL = 1000;

// Epoch seconds of a strict ISO-8601 string (naive means UTC), or null when it is not one.
function epoch(text) {
  const m = ISO.exec(text);
  if (m === null) return null;
  const year = +m[1], month = +m[2], day = +m[3];
  const hour = +(m[4] || 0), minute = +(m[5] || 0), second = +(m[6] || 0);
  const millis = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(millis);
  if (
    check.getUTCFullYear() !== year ||
    check.getUTCMonth() !== month - 1 ||
    check.getUTCDate() !== day ||
    hour > 23 ||
    minute > 59 ||
    second > 59
  ) {
    return null;
  }
  let seconds = millis / 1000;
  const zone = m[7];
  if (zone && zone !== "Z") {
    const offset = +zone.slice(1, 3) * 3600 + +zone.slice(-2) * 60;
    seconds += zone[0] === "+" ? -offset : offset;
  }
  return seconds;
}

function value(v) {
  if (typeof v === "string") {
    const e = epoch(v);
    return e === null ? v : e;
  }
  if (Array.isArray(v)) return v.map((x) => (typeof x === "string" ? x : JSON.stringify(x)));
  if (v !== null && typeof v === "object") return JSON.stringify(v);
  return v;
}

// The profile record of one event, or null when User Upload would refuse it.
function record(event, now) {
  if (event.userId === undefined || event.userId === null) return null;
  const attributes = event.traits || event.properties;
  if (!attributes) return null;
  const data = {};
  for (const [given, v] of Object.entries(attributes)) {
    if (v === null) continue;
    const key = KEYS[given] || given;
    if (key === "Gender") {
      data[key] = typeof v === "string" ? GENDERS[v.toLowerCase()] || v : v;
    } else if (key === "DOB") {
      const e = typeof v === "string" ? epoch(v) : null;
      if (e === null) return null;
      data[key] = `$D_${e}`;
    } else {
      data[key] = value(v);
    }
  }
  if (data.Phone !== undefined && !(typeof data.Phone === "string" && PHONE.test(data.Phone))) {
    return null;
  }
  const ts = typeof event.timestamp === "string" ? epoch(event.timestamp) : null;
  return {
    type: "profile",
    identity: String(event.userId),
    ts: ts === null ? now : ts,
    profileData: data,
  };
}

async function main() {
  const path = process.argv[2];
  const clevertap = CleverTap.init(
    process.env.CLEVERTAP_PROJECT_ID,
    process.env.CLEVERTAP_PASSCODE,
    CleverTap.REGIONS.EUROPE
  );
  clevertap.api.apiEndpoint = process.env.CLEVERTAP_ENDPOINT.replace(/\/+$/, "") + "/1";
  const now = Math.floor(Date.now() / 1000);

  let records = [];
  const flush = async () => {
    const answer = await clevertap.upload(records, { batchSize: 100 });
    for (const one of Array.isArray(answer) ? answer : [answer]) {
      if (!one || one.status !== "success") {
        throw new Error(`upload answered ${JSON.stringify(one).slice(0, 200)}`);
      }
    }
    records = [];
  };

  const lines = readline.createInterface({
    input: fs.createReadStream(path),
    crlfDelay: Infinity,
  });
  for await (const line of lines) {
    if (!line) continue;
    const mapped = record(JSON.parse(line), now);
    if (mapped !== null) {
      records.push(mapped);
      if (records.length === PER_CALL) await flush();
    }
  }
  if (records.length) await flush();
}

main().catch((error) => {
  console.error(`node baseline: ${error && error.stack ? error.stack : error}`);
  process.exit(1);
});
