import type { Client } from 'graphql-ws';

/** Runs one operation over graphql-ws; resolves with its first result, rejects with the close event or error. */
export function wsRequest<T = any>(client: Client, query: string, variables?: Record<string, unknown>) {
  return new Promise<{ data?: T; errors?: any[] }>((resolve, reject) => {
    let result: { data?: T; errors?: any[] } | undefined;
    client.subscribe(
      { query, variables },
      {
        next: (value) => {
          result = value as any;
        },
        error: (error) => reject(error),
        complete: () => (result ? resolve(result) : reject(new Error('completed without a result'))),
      },
    );
  });
}

/** Resolves with the code and reason of the socket's next close. */
export function nextClose(client: Client): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => {
    const off = client.on('closed', (event: any) => {
      off();
      resolve({ code: event.code, reason: event.reason });
    });
  });
}
