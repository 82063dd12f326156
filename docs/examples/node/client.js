// Tributary over gRPC from Node.js: create a dataset, insert vectors, search, clean up.
//
//   npm install && node client.js
//
// The target defaults to the `make up` one (127.0.0.1:50051); override it with TRIBUTARY_GRPC.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', '..', 'proto', 'deeplake_service.proto');
const TARGET = process.env.TRIBUTARY_GRPC || '127.0.0.1:50051';

const definition = protoLoader.loadSync(PROTO, {
  keepCase: true, // field names as in the proto (dataset_id, query_vector, top_k, ...)
  longs: Number, // int64 counts as numbers, like the REST API
  enums: String,
  defaults: true,
  oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).deeplake.v1;
const credentials = grpc.credentials.createInsecure();
const datasets = new v1.DatasetService(TARGET, credentials);
const vectors = new v1.VectorService(TARGET, credentials);
const search = new v1.SearchService(TARGET, credentials);

// Promisified unary call with a deadline.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30_000);
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function main() {
  const name = `node-example-${process.pid}-${Date.now().toString(36)}`;
  const created = await call(datasets, 'CreateDataset', {
    name, dimensions: 4, metric_type: 'cosine', description: 'node example',
  });
  console.log('created:', created.dataset.name, `(${created.dataset.shard_count} shards)`);
  try {
    const inserted = await call(vectors, 'InsertVectors', {
      dataset_id: name,
      vectors: [
        { id: 'a1', document_id: 'doc1', values: [0.1, 0.2, 0.3, 0.4], content: 'rivers join',
          metadata: { lang: 'en' } },
        { id: 'a2', values: [0.4, 0.3, 0.2, 0.1], content: 'streams part',
          metadata: { lang: 'fr' } },
      ],
    });
    console.log('inserted:', inserted.inserted_count);

    const found = await call(search, 'SearchVectors', {
      dataset_id: name,
      query_vector: [0.1, 0.2, 0.3, 0.4],
      options: { top_k: 5, include_content: true, include_metadata: true },
    });
    for (const hit of found.results) {
      console.log(`  #${hit.rank} ${hit.vector.id} score=${hit.score.toFixed(4)} ` +
                  `${JSON.stringify(hit.vector.content)} ${JSON.stringify(hit.vector.metadata)}`);
    }
    if (found.results.length !== 2 || found.results[0].vector.id !== 'a1') {
      throw new Error(`unexpected search results: ${JSON.stringify(found.results)}`);
    }

    try {
      await call(vectors, 'GetVector', { dataset_id: name, vector_id: 'missing' });
      throw new Error('expected NOT_FOUND');
    } catch (err) {
      if (err.code !== grpc.status.NOT_FOUND) throw err;
      console.log('missing vector -> NOT_FOUND:', err.details);
    }
  } finally {
    await call(datasets, 'DeleteDataset', { dataset_id: name });
    console.log('deleted:', name);
  }
}

main()
  .then(() => {
    console.log('ok');
    process.exit(0);
  })
  .catch((err) => {
    console.error('failed:', err.message || err);
    process.exit(1);
  });
