// The failure converter of every pg-dts worker (DataConverter.failureConverterPath), in the workflow
// bundle and in the worker's main thread: a failure's message and stack trace go into an encoded
// payload (encodedAttributes), which the payload codec encrypts when PG_DTS_CODEC_KEY is set, so hosts,
// database errors and the key values of differing rows are not stored in plain text in history.
// Plain CommonJS: the SDK requires it by path and webpack bundles it, with no TypeScript loader.
'use strict';
const { DefaultFailureConverter } = require('@temporalio/common');

exports.failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
