/** What `GET /v2` reports about this server. */
export const SERVER_INFO = { name: 'onnx-serverless', version: '0.1.0' } as const;
