// A promise given a time limit: what /readyz, the save-time address check and the LISTEN connections' checks wait for.

/**
 * `promise`'s outcome, or a rejection with `message` once `ms` have passed first. The promise
 * goes on (nothing here can stop it); a failure of it after the limit is ignored.
 */
export async function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  promise.catch(() => {}); // once too late, no one waits for it
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
