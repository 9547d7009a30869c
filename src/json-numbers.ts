import { ErrorCode, HooklineError } from './errors.js';

/**
 * Numbers a JSON parser here cannot keep as written. JavaScript reads every JSON number as an
 * IEEE 754 double: 12345678901234567890 becomes 12345678901234567000, 0.12345678901234567891
 * loses its last digits, 1e-400 becomes 0. Such a number in an event's data would be stored,
 * signed and delivered as another number, with a 202 to the caller: it is refused instead,
 * naming where it is, so the caller can send it as a string.
 */

/**
 * Only text with a run of 16 digits (and points), or an exponent of three digits, can hold
 * such a number: a decimal of at most 15 significant digits within the exponents a double
 * keeps reads back as itself (DBL_DIG). Most bodies are passed by this one test.
 */
const MAYBE_INEXACT = /[\d.]{16}|[eE][+-]?\d{3}/;
/** In valid JSON, a string (skipped whole: digits in it are text) or a number. */
const STRING_OR_NUMBER = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const DECIMAL = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/** A decimal's value as sign, significant digits and exponent (`-12.50` is `-125e-1`), zero as `0`. */
function normalized(text: string): string {
  const [, sign, whole = '', fraction = '', exponent = '0'] = DECIMAL.exec(text)!;
  const digits = `${whole}${fraction}`.replace(/^0+/, '');
  if (!digits) return '0';
  const significant = digits.replace(/0+$/, '');
  return `${sign}${significant}e${Number(exponent) - fraction.length + digits.length - significant.length}`;
}

/**
 * Whether a JSON number's text reads as a double of exactly its value, as written back
 * (`1.10` is `1.1`, the same number; `9007199254740993` is `9007199254740992`, another).
 * A number too large for a double (1e999) counts as kept: it is refused elsewhere, as not finite.
 */
export function keptExactly(text: string): boolean {
  const value = Number(text);
  return !Number.isFinite(value) || normalized(text) === normalized(String(value));
}

/** A number in valid JSON text that is not kept exactly, with where it starts; undefined if none. */
export function inexactNumber(json: string): { text: string; offset: number } | undefined {
  if (!MAYBE_INEXACT.test(json)) return undefined;
  for (const match of json.matchAll(STRING_OR_NUMBER)) {
    const [token] = match;
    if (token.charCodeAt(0) !== 0x22 /* " */ && !keptExactly(token)) return { text: token, offset: match.index };
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
  for (const { array, at } of stack) {
    if (array) path += `[${at}]`;
    else if (at !== undefined) path += path ? `.${at}` : `${at}`;
  }
  return path;
}

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
 */
export function inexactNumberError(json: string, root = ''): InexactNumberError | undefined {
  const found = inexactNumber(json);
  if (!found) return undefined;
  const path = pathAt(json, found.offset, root);
  return new InexactNumberError(found.text, path, path.split(/[.[]/)[0] || undefined);
}

/** Throws inexactNumberError's refusal, if there is one. */
export function refuseInexactNumbers(json: string, root = ''): void {
  const error = inexactNumberError(json, root);
  if (error) throw error;
}
