'use strict';
// Node.js client for healthai: @grpc/grpc-js with the repository's proto/ loaded at run time by
// @grpc/proto-loader (no generated files to keep in sync). Promise-returning methods, deadlines,
// TLS / mutual TLS, API key as "authorization: Bearer <key>".
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_PROTO_DIR = process.env.HEALTHAI_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILES = ['ingest.proto', 'risk.proto', 'forecast.proto', 'diagnostics.proto'];

function loadPackage(protoDir = DEFAULT_PROTO_DIR) {
  const files = PROTO_FILES.map((f) => path.join('healthai', 'v1', f));
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protoDir],
    keepCase: true, // field names exactly as in the .proto (snake_case)
    longs: String, // int64 as decimal strings (no precision loss)
    enums: String, // enum values by name
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).healthai.v1;
}

class HealthAIClient {
  // options: {rootCert, clientCert, clientKey (paths), tls (bool), apiKey, timeoutMs}
  constructor(address, options = {}) {
    const pkg = loadPackage(options.protoDir);
    const useTls = options.tls || options.rootCert || options.clientCert;
    const read = (p) => (p ? fs.readFileSync(p) : null);
    const creds = useTls
      ? grpc.credentials.createSsl(read(options.rootCert), read(options.clientKey), read(options.clientCert))
      : grpc.credentials.createInsecure();
    const channelOptions = { 'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.max_send_message_length': 64 * 1024 * 1024 };
    this.ingest = new pkg.Ingest(address, creds, channelOptions);
    this.risk = new pkg.Risk(address, creds, channelOptions);
    this.forecaster = new pkg.Forecast(address, creds, channelOptions);
    this.diagnostics = new pkg.Diagnostics(address, creds, channelOptions);
    this.apiKey = options.apiKey || process.env.HEALTHAI_API_KEY || null;
    this.timeoutMs = options.timeoutMs || 30000;
  }

  _call(stub, method, request) {
    const metadata = new grpc.Metadata();
    if (this.apiKey) metadata.set('authorization', `Bearer ${this.apiKey}`);
    const deadline = new Date(Date.now() + this.timeoutMs);
    return new Promise((resolve, reject) => {
      stub[method](request, metadata, { deadline }, (err, reply) => {
        if (err) {
          const e = new Error(`${method} failed: ${grpc.status[err.code]}: ${err.details}`);
          e.code = err.code;
          e.codeName = grpc.status[err.code];
          e.details = err.details;
          reject(e);
        } else {
          resolve(reply);
        }
      });
    });
  }

  // FHIR R4 JSON (Buffer or string): a Bundle, a resource or an array of resources.
  ingestFhir(json, source = 'node-client') {
    return this._call(this.ingest, 'IngestBatch', { source, fhir: { json: Buffer.from(json) } });
  }

  // Flat records: {patients: [...], encounters, conditions, observations} with the proto's field names.
  ingestFlat(records, source = 'node-client') {
    return this._call(this.ingest, 'IngestBatch', { source, flat: records });
  }

  // {model_name, feature_names?, features: [row-major floats], top_features?}
  score(request) {
    return this._call(this.risk, 'Score', request);
  }

  // {graph | model_name, history: {region_ids, counts}} or {..., stored: {syndrome}}
  forecast(request) {
    return this._call(this.forecaster, 'Forecast', request);
  }

  echo(payload) {
    return this._call(this.diagnostics, 'Echo', { payload: Buffer.from(payload) });
  }

  close() {
    for (const s of [this.ingest, this.risk, this.forecaster, this.diagnostics]) s.close();
  }
}

module.exports = { HealthAIClient, loadPackage };
