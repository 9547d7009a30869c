import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';

/** A POST whose headers (with the key) go now and whose body is held until `finish()`. */
export function slowPost(baseUrl: string, path: string, apiKey: string, body: string): { finish: () => Promise<{ status: number; body: any }> } {
  let req: ClientRequest;
  const answered = new Promise<IncomingMessage>((resolve, reject) => {
    req = httpRequest(`${baseUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    req.on('response', resolve).on('error', reject);
    req.flushHeaders();
    req.write(body.slice(0, 10));
  });
  return {
    finish: async () => {
      req.end(body.slice(10));
      const res = await answered;
      let text = '';
      for await (const chunk of res) text += chunk;
      return { status: res.statusCode!, body: JSON.parse(text) };
    },
  };
}
