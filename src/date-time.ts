// Points in time given as text: RFC 3339's date-time (ISO-8601's profile for the internet),
// read exactly. `new Date(text)` takes far more (years PostgreSQL cannot store, February 30th
// moved into March, "1" as 2001, dates without an offset in the server's time zone).

/** RFC 3339: a date, a time with its seconds, and (unless told otherwise) its offset from UTC. */
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?$/;
/**
 * With `lenient`, ISO 8601's other common forms as well: seconds left out (Python's
 * `isoformat(timespec='minutes')`, HTML's datetime-local), offsets of hours (`+00`, as
 * PostgreSQL writes a timestamptz) or without a colon (`+0000`, strftime's `%z`).
 */
const LENIENT_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$/;

export const DATE_TIME_EXPECTED = 'an RFC 3339 (ISO-8601) date-time in the years 0001 to 9999 (2024-02-14T10:30:00.000Z)';

/**
 * The moment `text` names, or why it names none. With `utcWithoutOffset`, a date-time with no
 * offset is UTC (as Python's `datetime.utcnow().isoformat()` writes it); without, it is refused.
 */
export function parseDateTime(text: string, options: { utcWithoutOffset?: boolean; lenient?: boolean } = {}): Date | { problem: string } {
  const match = (options.lenient ? LENIENT_DATE_TIME : DATE_TIME).exec(text);
  if (!match) return { problem: 'is not one' };
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map((part) => Number(part ?? 0)) as [number, number, number, number, number, number];
  const [fraction, zulu, sign, offsetHours, offsetMinutes] = match.slice(7);
  if (!zulu && !sign && !options.utcWithoutOffset) return { problem: 'has no offset (Z, or +01:00)' };
  const daysInMonth = month === 2 ? (isLeapYear(year) ? 29 : 28) : [31, 0, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysInMonth! || hour > 23 || minute > 59 || second > 59) {
    return { problem: 'is no such moment' };
  }
  if (sign && (Number(offsetHours) > 23 || Number(offsetMinutes ?? 0) > 59)) return { problem: 'has no such offset' };
  const date = new Date(0);
  // setUTCFullYear, not Date.UTC: that one takes the years 0-99 as 1900-1999.
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, Number((fraction ?? '0').slice(0, 3).padEnd(3, '0')));
  const offset = sign ? (sign === '-' ? -1 : 1) * (Number(offsetHours) * 60 + Number(offsetMinutes ?? 0)) : 0;
  const moment = new Date(date.getTime() - offset * 60_000);
  // An offset can move the moment out of the years written (9999-12-31T23:59:59-01:00 is in
  // 10000 in UTC), which toISOString() writes as +010000-… and PostgreSQL may not take.
  const utcYear = moment.getUTCFullYear();
  if (utcYear < 1 || utcYear > 9999) return { problem: 'is outside the years 0001 to 9999 in UTC' };
  return moment;
}

function isLeapYear(year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}
