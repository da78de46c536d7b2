// A Node.js app for the integration tests: no otel-llm-quota in it, only the official
// OpenTelemetry JS SDK. It ends the spans an app traced by an OpenTelemetry GenAI instrumentation
// (@opentelemetry/instrumentation-openai and the like) sends: a SERVER span for the app's own
// request, and under it a CLIENT span per model call named "chat <model>" with gen_ai.* request,
// response and usage attributes. The spans go over OTLP/HTTP (protobuf) to
// OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces); the resource comes from
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
//
//   node genai_app.js calls.json
//
// calls.json is a list of model calls: {provider, provider_key, model, response_id,
// input_tokens, output_tokens}; provider_key is the attribute that names the provider
// ("gen_ai.provider.name" in current conventions, "gen_ai.system" in the older ones that
// instrumentation-openai still writes). Prints one JSON line: {"trace_ids": [...]} (one per
// call, hex). Exits non-zero if the export fails.
'use strict';

const fs = require('node:fs');
const { context, trace, SpanKind, SpanStatusCode } = require('@opentelemetry/api');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { defaultResource, detectResources, envDetector } = require('@opentelemetry/resources');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_SERVER_ADDRESS,
  ATTR_URL_PATH,
} = require('@opentelemetry/semantic-conventions');

async function main() {
  const calls = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const exporter = new OTLPTraceExporter(); // reads OTEL_EXPORTER_OTLP_* itself
  let exportFailed = false;
  const exportOriginal = exporter.export.bind(exporter);
  exporter.export = (spans, done) =>
    exportOriginal(spans, (result) => {
      if (result.code !== 0) {
        exportFailed = true;
        console.error('export failed:', result.error);
      }
      done(result);
    });
  const provider = new BasicTracerProvider({
    resource: defaultResource().merge(detectResources({ detectors: [envDetector] })),
    spanProcessors: [new BatchSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('genai-node-app', '1.0.0');

  const traceIds = [];
  for (const call of calls) {
    const request = tracer.startSpan('POST /chat', {
      kind: SpanKind.SERVER,
      attributes: {
        [ATTR_HTTP_REQUEST_METHOD]: 'POST',
        [ATTR_URL_PATH]: '/chat',
      },
    });
    const parent = trace.setSpan(context.active(), request);
    const chat = tracer.startSpan(
      `chat ${call.model}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'gen_ai.operation.name': 'chat',
          [call.provider_key]: call.provider,
          'gen_ai.request.model': call.model,
          [ATTR_SERVER_ADDRESS]: 'api.example.com',
        },
      },
      parent,
    );
    chat.setAttributes({
      'gen_ai.response.id': call.response_id,
      'gen_ai.response.model': call.model,
      'gen_ai.response.finish_reasons': ['stop'],
      'gen_ai.usage.input_tokens': call.input_tokens,
      'gen_ai.usage.output_tokens': call.output_tokens,
    });
    chat.setStatus({ code: SpanStatusCode.UNSET });
    chat.end();
    request.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, 200);
    request.end();
    traceIds.push(chat.spanContext().traceId);
  }
  await provider.forceFlush();
  await provider.shutdown();
  if (exportFailed) {
    process.exitCode = 1;
  }
  process.stdout.write(JSON.stringify({ trace_ids: traceIds }) + '\n');
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
