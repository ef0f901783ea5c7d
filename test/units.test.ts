import test from 'ava';
import { formatBytes, parseBytes } from '../src/core/units';

test('formatBytes picks the largest unit and fixed decimals', (t) => {
  t.is(formatBytes(0), '0 B');
  t.is(formatBytes(1023), '1023 B');
  t.is(formatBytes(1536), '1.5 KiB');
  t.is(formatBytes(92 * 2 ** 20), '92 MiB');
  t.is(formatBytes(101187584), '97 MiB');
  t.is(formatBytes(700 * 2 ** 20), '700 MiB');
  t.is(formatBytes(4 * 2 ** 30), '4.00 GiB');
  t.is(formatBytes(4198281216), '3.91 GiB');
  t.is(formatBytes(2n ** 40n), '1.00 TiB');
  t.is(formatBytes(-3 * 2 ** 20), '-3.0 MiB');
});

test('parseBytes reads binary units, decimal SI units and plain byte counts', (t) => {
  t.is(parseBytes('2147483648'), 2147483648);
  t.is(parseBytes('600M'), 600 * 2 ** 20);
  t.is(parseBytes('600m'), 600 * 2 ** 20);
  t.is(parseBytes('1.5G'), 1610612736);
  t.is(parseBytes('700MiB'), 700 * 2 ** 20);
  t.is(parseBytes('64 KiB'), 65536);
  t.is(parseBytes('2GB'), 2e9);
  t.is(parseBytes('512B'), 512);
  t.is(parseBytes('1.1K'), 1126);
});

test('parseBytes rejects what is not a size, naming the option and the accepted units', (t) => {
  const error = t.throws(() => parseBytes('lots', '--memory'));
  t.regex(error!.message, /^--memory: "lots" is not a byte size\. .*600M, 1\.5G, 700MiB, 2147483648/);
  t.throws(() => parseBytes('-5M'), { message: /is not a byte size/ });
  t.throws(() => parseBytes('5X'), { message: /is not a byte size/ });
  t.throws(() => parseBytes(''), { message: /is not a byte size/ });
  t.throws(() => parseBytes('99999999T'), { message: /too large/ });
});
