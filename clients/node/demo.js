#!/usr/bin/env node
'use strict';
// ingest -> score -> forecast against a running server; prints one JSON object and checks the
// answers' shape and invariants (exit 1 on a failed check, 3 on an RPC error, 2 on bad usage).
//
//   node demo.js --address 127.0.0.1:50051 --fhir bundle.json \
//     --risk-model risk_tiny --feature-names age,bmi --features 70,28,30,22 \
//     --forecast-model forecast_tiny --regions US-MA,US-NY --history 1,2,3,4,5,6,7,8
const fs = require('fs');
const { HealthAIClient } = require('./healthai_client');

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${argv[i]}: expected --name value pairs`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  if (!args.address) throw new Error('--address host:port is required');
  return args;
}

const list = (s) => (s ? s.split(',').filter((x) => x.length) : []);
const numbers = (s) => list(s).map(Number);

function check(condition, message) {
  if (!condition) {
    const e = new Error(`check failed: ${message}`);
    e.failedCheck = true;
    throw e;
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const client = new HealthAIClient(args.address, {
    rootCert: args['root-cert'], clientCert: args['client-cert'], clientKey: args['client-key'],
    apiKey: args['api-key'], timeoutMs: Number(args['timeout-ms'] || 30000),
  });
  const out = {};
  try {
    if (args.fhir) {
      const r = await client.ingestFhir(fs.readFileSync(args.fhir), args.source || 'node-client');
      check(r.statuses.length === r.accepted + r.rejected, 'one status per record');
      check(r.accepted > 0, 'some records accepted');
      out.ingest = { accepted: r.accepted, rejected: r.rejected, batch_id: r.receipt.batch_id,
        stored: Object.fromEntries(Object.entries(r.receipt.stored).map(([k, v]) => [k, Number(v)])),
        duplicates: Number(r.receipt.duplicates) };
    }
    if (args['risk-model']) {
      const features = numbers(args.features);
      const names = list(args['feature-names']);
      const r = await client.score({ model_name: args['risk-model'], feature_names: names, features });
      const patients = names.length ? features.length / names.length : r.probability.length;
      check(r.probability.length === patients, `one probability per patient (${patients})`);
      check(r.probability.every((p) => p >= 0 && p <= 1), 'probabilities in [0, 1]');
      check(r.risk_band.length === patients, 'one risk band per patient');
      out.score = { model_name: r.model_name, model_version: Number(r.model_version),
        probability: r.probability, risk_band: r.risk_band, top_feature_name: r.top_feature_name };
    }
    if (args['forecast-model'] || args.graph) {
      const request = { graph: args.graph || '', model_name: args['forecast-model'] || '' };
      if (args.history) request.history = { region_ids: list(args.regions), counts: numbers(args.history) };
      else request.stored = { syndrome: args.stored || 'ili' };
      const r = await client.forecast(request);
      const h = r.horizons.length; const n = r.region_ids.length; const q = r.quantile_levels.length;
      check(r.point.length === h * n, 'point is [horizons x regions]');
      check(r.quantiles.length === h * n * q, 'quantiles is [horizons x regions x levels]');
      for (let i = 0; i < h * n; i += 1) {
        for (let j = 1; j < q; j += 1) check(r.quantiles[i * q + j] >= r.quantiles[i * q + j - 1], 'quantiles ordered');
      }
      out.forecast = { model_name: r.model_name, model_version: Number(r.model_version), region_ids: r.region_ids,
        horizons: r.horizons, quantile_levels: r.quantile_levels, point: r.point, quantiles: r.quantiles };
    }
  } catch (e) {
    e.done = out; // the steps that succeeded before the failing one
    throw e;
  } finally {
    client.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => {
  if (e.done && Object.keys(e.done).length) process.stdout.write(`${JSON.stringify(e.done)}\n`);
  process.stderr.write(`healthai node demo: ${e.message}\n`);
  process.exit(e.failedCheck ? 1 : e.code !== undefined ? 3 : 2);
});
