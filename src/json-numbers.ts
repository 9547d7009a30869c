import { ErrorCode, HooklineError } from './errors.js';

/**
 * Numbers a JSON parser here cannot keep as written. JavaScript reads every JSON number as an
 * IEEE 754 double: 12345678901234567890 becomes 12345678901234567000, 0.12345678901234567891
 * loses its last digits, 1e-400 becomes 0. Such a number in an event's data would be stored,
 * signed and delivered as another number, with a 202 to the caller: it is refused instead,
 * naming where it is, so the caller can send it as a string.
 */

const DECIMAL = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/**
 * A decimal's value as sign, significant digits and exponent (`-12.50` is `-125e-1`), zero as
 * `0`. The zeros at either end are found by walking to them: `/0+$/` took time in the square of
 * a run of zeros not at the end (`1.000…0001`), and a request held the process for seconds.
 */
function normalized(text: string): string {
  const [, sign, whole = '', fraction = '', exponent = '0'] = DECIMAL.exec(text)!;
  const digits = `${whole}${fraction}`;
  let first = 0;
  while (first < digits.length && digits.charCodeAt(first) === 0x30) first++;
  if (first === digits.length) return '0';
  let end = digits.length;
  while (digits.charCodeAt(end - 1) === 0x30) end--;
  return `${sign}${digits.slice(first, end)}e${Number(exponent) - fraction.length + digits.length - end}`;
}

/**
 * Whether a JSON number's text reads as a double of exactly its value, as written back
 * (`1.10` is `1.1`, the same number; `9007199254740993` is `9007199254740992`, another).
 * A number too large for a double (1e999) counts as kept: it is refused elsewhere, as not finite.
 */
export function keptExactly(text: string): boolean {
  const value = Number(text);
  if (!Number.isFinite(value)) return true;
  const written = String(value);
  // Most often written back the same (a double as JavaScript writes it): no more to compare.
  return written === text || normalized(text) === normalized(written);
}

/**
 * A number in valid JSON text (parsed already: invalid text is not looked at) that is not
 * kept exactly, with where it starts; undefined if none. One pass, character by character, in
 * time linear in the text: strings are skipped whole, and only a number of 16 characters or
 * more, or with an exponent, is looked at closely (a decimal of at most 15 significant digits
 * reads back as itself: DBL_DIG).
 */
export function inexactNumber(json: string): { text: string; offset: number } | undefined {
  const n = json.length;
  for (let i = 0; i < n; ) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < n; i++) {
        const d = json.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
      i++;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      const start = i;
      let exponent = false;
      for (i++; i < n; i++) {
        const d = json.charCodeAt(i);
        if (d === 0x65 || d === 0x45 /* e E */) exponent = true;
        else if (!((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x2b || d === 0x2d)) break;
      }
      if (exponent || i - start >= 16) {
        const text = json.slice(start, i);
        if (!keptExactly(text)) return { text, offset: start };
      }
    } else {
      i++;
    }
  }
  return undefined;
}

/**
 * The path (`payload.amount`, `variables.data.items[2]`) of the value at `offset` in valid JSON
 * text: the containers entered before it, with the key or index in each. Only for errors.
 */
export function pathAt(json: string, offset: number, root = ''): string {
  const stack: Array<{ array: boolean; at: string | number | undefined }> = [];
  let lastString: string | undefined;
  for (const match of json.matchAll(/"(?:[^"\\]|\\.)*"|[{}[\],:]/g)) {
    if (match.index >= offset) break;
    const top = stack.at(-1);
    switch (match[0]) {
      case '{':
        stack.push({ array: false, at: undefined });
        break;
      case '[':
        stack.push({ array: true, at: 0 });
        break;
      case '}':
      case ']':
        stack.pop();
        break;
      case ',':
        if (top?.array) top.at = (top.at as number) + 1;
        break;
      case ':':
        if (top) top.at = lastString;
        break;
      default:
        lastString = JSON.parse(match[0]) as string;
    }
  }
  let path = root;
  for (const { array, at } of stack) if (at !== undefined) path = stepInto(path, array ? (at as number) : String(at));
  return path;
}

/** `path` one step further in: an array's index, or an object's key. */
export function stepInto(path: string, at: string | number): string {
  if (typeof at === 'number') return `${path}[${at}]`;
  // A key that would read as more than one step (`a.b`, `x[0]`) is written quoted.
  return !PLAIN_KEY.test(at) ? `${path}[${JSON.stringify(at)}]` : path ? `${path}.${at}` : at;
}

const PLAIN_KEY = /^[^.[\]"\\]+$/;

/** A request refused for a number it would not keep (BAD_USER_INPUT), naming its path. */
export class InexactNumberError extends HooklineError {
  constructor(number: string, path: string, field?: string) {
    super(
      ErrorCode.BAD_USER_INPUT,
      `${path ? `${path}: ` : ''}the number ${number.length > 60 ? `${number.slice(0, 60)}…` : number} cannot be kept exactly ` +
        `(JSON numbers are read as IEEE 754 doubles, 15-17 significant digits: it would be stored and sent as ${String(Number(number))}); ` +
        'send it as a string',
      field,
    );
  }
}

/**
 * The refusal of valid JSON text holding a number it would not keep exactly, naming its path
 * within `root` (`variables`), its field the path's first key (REST's `payload`); undefined if none.
 * The text must be valid JSON (parsed already).
 */
export function inexactNumberError(json: string, root = '', within = ''): InexactNumberError | undefined {
  const found = inexactNumber(json);
  if (!found) return undefined;
  // `within`: a prefix of the path left out (a graphql-ws message's `payload.`).
  let path = pathAt(json, found.offset, root);
  if (within && path.startsWith(within)) path = path.slice(within.length);
  return new InexactNumberError(found.text, path, path.split(/[.[]/)[0] || undefined);
}

/** Throws inexactNumberError's refusal, if there is one. */
export function refuseInexactNumbers(json: string, root = ''): void {
  const error = inexactNumberError(json, root);
  if (error) throw error;
}
