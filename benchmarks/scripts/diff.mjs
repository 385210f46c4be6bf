// node scripts/diff.mjs a.cpuprofile b.cpuprofile [events]: self samples by function, b minus a.
import { readFileSync } from 'node:fs';
const load = (file) => {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const out = new Map();
  const dt = (profile.endTime - profile.startTime) / profile.samples.length; // µs per sample
  for (const id of profile.samples) {
    const f = byId.get(id).callFrame;
    const key = `${f.functionName || '(anon)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
    out.set(key, (out.get(key) ?? 0) + 1);
  }
  return { out, dt, total: profile.samples.length };
};
const a = load(process.argv[2]);
const b = load(process.argv[3]);
const events = Number(process.argv[4] || 0);
const keys = new Set([...a.out.keys(), ...b.out.keys()]);
const rows = [...keys].map((k) => [
  k,
  (b.out.get(k) ?? 0) - (a.out.get(k) ?? 0),
  a.out.get(k) ?? 0,
  b.out.get(k) ?? 0,
]);
rows.sort((x, y) => Math.abs(y[1]) - Math.abs(x[1]));
console.log(`samples a=${a.total} b=${b.total}, µs/sample ${a.dt.toFixed(0)} ${b.dt.toFixed(0)}`);
for (const [k, d, x, y] of rows.slice(0, 45)) {
  const us = events > 0 ? `  ${((d * b.dt) / events).toFixed(3)} µs/ev` : '';
  console.log(`${String(d).padStart(6)} (${x} -> ${y})${us}  ${k}`);
}
