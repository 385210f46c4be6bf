// node scripts/top.mjs file.cpuprofile [n] [total]: self (and total) time by function, in per cent.
import { readFileSync } from 'node:fs';
const profile = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const limit = Number(process.argv[3] || 40);
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const counts = new Map();
for (const sample of profile.samples) counts.set(sample, (counts.get(sample) ?? 0) + 1);
const total = profile.samples.length;
const self = new Map();
const inclusive = new Map();
const parent = new Map();
for (const node of profile.nodes)
  for (const child of node.children ?? []) parent.set(child, node.id);
const name = (node) => {
  const f = node.callFrame;
  const file = f.url.split('/').slice(-2).join('/');
  return `${f.functionName || '(anon)'} ${file}:${f.lineNumber + 1}`;
};
for (const [id, n] of counts) {
  const node = byId.get(id);
  const key = name(node);
  self.set(key, (self.get(key) ?? 0) + n);
  const seen = new Set();
  for (let at = id; at !== undefined; at = parent.get(at)) {
    const k = name(byId.get(at));
    if (seen.has(k)) continue;
    seen.add(k);
    inclusive.set(k, (inclusive.get(k) ?? 0) + n);
  }
}
const show = (map, title) => {
  console.log(`--- ${title} (of ${total} samples)`);
  for (const [k, v] of [...map].sort((a, b) => b[1] - a[1]).slice(0, limit))
    console.log(`${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
};
show(self, 'self');
if (process.argv[4] === 'total') show(inclusive, 'total');
