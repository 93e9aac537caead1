// The Dockerfile, checked against the repository and what `npm ci && npm run build` does (docker cannot
// build on this machine): two stages, the addon built by npm ci and copied, every COPY source present,
// uid 1337, ENTRYPOINT meshgate on PATH (and the pilot-agent shim), the health check on 15021, the ports
// the manifests use, and the image name the README, deploy/ and kube-inject share.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_IMAGE, proxyContainer } from '../../../src/inject/inject';
import { copyOf, parseDockerfile, type Stage } from '../../helpers/dockerfile';
import { REPO, deployManifests, type Obj } from '../../helpers/manifests';

const text = fs.readFileSync(path.join(REPO, 'Dockerfile'), 'utf8');
const stages = parseDockerfile(text);
const [build, runtime] = stages as [Stage, Stage];
const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string; engines: { node: string }; scripts: Record<string, string> };
const ops = (s: Stage, op: string) => s.instructions.filter((i) => i.op === op);
const index = (s: Stage, pred: (args: string) => boolean, op = 'RUN') => s.instructions.findIndex((i) => i.op === op && pred(i.args));

describe('Dockerfile', () => {
  it('the reader: stages, continuation lines, COPY forms (table)', () => {
    const cases: [string, unknown][] = [
      ['FROM a AS b\nRUN x \\\n  && y\n# c\nFROM c\nUSER 1', [{ image: 'a', name: 'b', instructions: [{ op: 'RUN', args: 'x && y', line: 2 }] }, { image: 'c', instructions: [{ op: 'USER', args: '1', line: 6 }] }]],
      ['FROM --platform=linux/amd64 img:1\nCOPY --from=build /a ./b', [{ image: 'img:1', instructions: [{ op: 'COPY', args: '--from=build /a ./b', line: 2 }] }]],
    ];
    for (const [input, want] of cases) assert.deepEqual(parseDockerfile(input), want);
    assert.deepEqual(copyOf('--from=build /app/x ./x'), { from: 'build', sources: ['/app/x'], dest: './x' });
    assert.deepEqual(copyOf('["a b", "c", "/d"]'), { sources: ['a b', 'c'], dest: '/d' });
  });

  it('two stages: a build stage and a slim runtime, both on the Node major package.json asks for', () => {
    assert.equal(stages.length, 2);
    assert.equal(build.name, 'build');
    const major = /(\d+)/.exec(pkg.engines.node)![1];
    for (const s of stages) assert.match(s.image, new RegExp(`^node:${major}(\\.|-|$)`));
    assert.match(runtime.image, /-slim$/);
  });

  it('build stage: npm ci (which builds the addon through the install script) after what that script needs, then npm run build', () => {
    const ci = index(build, (a) => /^npm ci\b/.test(a));
    assert.ok(ci >= 0, 'RUN npm ci');
    assert.match(pkg.scripts['install']!, /scripts\/build-native\.js/);
    const copiedBefore = build.instructions.slice(0, ci).filter((i) => i.op === 'COPY').flatMap((i) => copyOf(i.args).sources);
    for (const need of ['package.json', 'package-lock.json', 'scripts', 'native']) assert.ok(copiedBefore.includes(need), `${need} copied before npm ci`);
    const toolchain = index(build, (a) => /apt-get install/.test(a) && ['python3', 'make', 'g++'].every((t) => a.includes(t)));
    assert.ok(toolchain >= 0 && toolchain < ci, 'python3, make and g++ installed before npm ci (node-gyp)');
    const compile = index(build, (a) => a.includes('npm run build'));
    assert.ok(compile > ci && compile > index(build, (a) => copyOf(a).sources.includes('src'), 'COPY'), 'npm run build after COPY src');
    assert.match(build.instructions[compile]!.args, /npm prune --omit=dev/);
  });

  it('every COPY source exists in the repository and is not in .dockerignore', () => {
    const ignored = fs.readFileSync(path.join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const p of ['node_modules', 'dist', 'native/origdst/build', '.git']) assert.ok(ignored.includes(p), `.dockerignore: ${p}`);
    const sources = stages.flatMap((s) => ops(s, 'COPY')).map((i) => copyOf(i.args)).filter((c) => !c.from).flatMap((c) => c.sources);
    assert.ok(sources.length >= 8);
    for (const src of sources) {
      assert.ok(fs.existsSync(path.join(REPO, src)), `COPY ${src}: not in the repository`);
      assert.ok(!ignored.some((p) => src === p || src.startsWith(`${p}/`)), `COPY ${src}: excluded by .dockerignore`);
    }
  });

  it('the runtime copies what the build made: production node_modules, dist/src, and the addon directory original-dst.ts loads', () => {
    const fromBuild = ops(runtime, 'COPY').map((i) => copyOf(i.args)).filter((c) => c.from === 'build').map((c) => c.sources[0]);
    assert.deepEqual(fromBuild, ['/app/node_modules', '/app/dist/src', '/app/native/origdst/build/Release']);
    // tsc writes src/ to dist/src/ (rootDir '.', outDir 'dist'), as npm run build just did here.
    assert.ok(fs.existsSync(path.join(REPO, 'dist/src/main.js')));
    // The addon directory exists in the build stage even when node-gyp failed (only sidecar mode needs it).
    assert.ok(build.instructions.some((i) => i.op === 'RUN' && i.args.includes('mkdir -p native/origdst/build/Release')));
    assert.match(fs.readFileSync(path.join(REPO, 'native/origdst/binding.gyp'), 'utf8'), /"target_name": "origdst"/);
    const loader = fs.readFileSync(path.join(REPO, 'src/sidecar/original-dst.ts'), 'utf8');
    const rel = /path\.resolve\(__dirname, '([^']+origdst\.node)'\)/.exec(loader)![1]!;
    assert.equal(path.posix.resolve('/app/dist/src/sidecar', rel), '/app/native/origdst/build/Release/origdst.node');
  });

  it('ENTRYPOINT ["meshgate"], linked onto PATH, whose script finds dist/src/main.js', () => {
    assert.deepEqual(JSON.parse(ops(runtime, 'ENTRYPOINT').at(-1)!.args), ['meshgate']);
    assert.ok(ops(runtime, 'RUN').some((i) => i.args.includes('ln -s /app/bin/meshgate /usr/local/bin/meshgate')));
    assert.match(fs.readFileSync(path.join(REPO, 'bin/meshgate'), 'utf8'), /require\('\.\.\/dist\/src\/main\.js'\)/);
    const copied = ops(runtime, 'COPY').map((i) => copyOf(i.args));
    assert.ok(copied.some((c) => !c.from && c.sources.includes('bin')));
    assert.ok(copied.some((c) => c.from === 'build' && c.dest === './dist/src'));
    assert.equal(ops(runtime, 'WORKDIR').at(-1)!.args, '/app');
  });

  it('pilot-agent (Istio runbooks: request, wait) linked onto PATH; its script is executable, finds dist/src/pilot-agent.js, and is not in package.json bin', () => {
    assert.ok(ops(runtime, 'RUN').some((i) => i.args.includes('ln -s /app/bin/pilot-agent /usr/local/bin/pilot-agent')));
    const script = path.join(REPO, 'bin/pilot-agent');
    const st = fs.statSync(script);
    assert.ok(st.isFile());
    assert.ok((st.mode & 0o111) === 0o111, `bin/pilot-agent mode ${(st.mode & 0o777).toString(8)}: not executable`);
    const body = fs.readFileSync(script, 'utf8');
    assert.match(body, /^#!\/usr\/bin\/env (-S )?node\b/);
    assert.match(body, /require\('\.\.\/dist\/src\/pilot-agent\.js'\)/);
    assert.ok(fs.existsSync(path.join(REPO, 'dist/src/pilot-agent.js')));
    const bin = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
    assert.ok(!('pilot-agent' in bin), 'pilot-agent in package.json bin would shadow a real Istio install');
  });

  it('runs as uid/gid 1337, made in the image; iptables installed for the init container', () => {
    assert.equal(ops(runtime, 'USER').at(-1)!.args, '1337:1337');
    assert.ok(ops(runtime, 'RUN').some((i) => /useradd --uid 1337 --gid 1337/.test(i.args) && /groupadd --gid 1337/.test(i.args)));
    assert.ok(ops(runtime, 'RUN').some((i) => /apt-get install .*\biptables\b/.test(i.args)));
    // Runbooks run curl in the proxy container, as Istio's image has it.
    assert.ok(ops(runtime, 'RUN').some((i) => /apt-get install .*\bcurl\b/.test(i.args)));
  });

  it('HEALTHCHECK asks 15021/healthz/ready; EXPOSE lists every port the manifests and the sidecar use, and not the loopback admin port', () => {
    const hc = ops(runtime, 'HEALTHCHECK').at(-1)!.args;
    assert.match(hc, /CMD .*http:\/\/127\.0\.0\.1:15021\/healthz\/ready/);
    const exposed = ops(runtime, 'EXPOSE').flatMap((i) => i.args.split(/\s+/)).map(Number).sort((a, b) => a - b);
    const deployment = deployManifests().map((m) => m.obj).filter((o) => o['kind'] === 'Deployment');
    const sidecar = proxyContainer({ image: DEFAULT_IMAGE, imagePullPolicy: 'IfNotPresent', nativeSidecar: false }, {}, false);
    const used = [...deployment.flatMap((d) => d['spec']['template']['spec']['containers'] as Obj[]), sidecar]
      .flatMap((c) => (c['ports'] as Obj[]).map((p) => p['containerPort'] as number));
    assert.deepEqual(exposed, [...new Set(used)].sort((a, b) => a - b));
    assert.ok(!exposed.includes(15000));
  });

  it(`the README describes this image: ${DEFAULT_IMAGE} built as the Dockerfile says, its runtime base, uid, entrypoint and health check`, () => {
    const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
    assert.equal(DEFAULT_IMAGE, `meshgate:${pkg.version}`);
    assert.ok(text.includes(`docker build -t ${DEFAULT_IMAGE} .`));
    const flat = readme.replace(/\s+/g, ' ');
    for (const said of [`docker build -t ${DEFAULT_IMAGE} .`, `\`${runtime.image}\` at runtime, uid 1337, \`ENTRYPOINT ["meshgate"]\`, health check on \`:15021/healthz/ready\``]) {
      assert.ok(flat.includes(said), `README: ${JSON.stringify(said)}`);
    }
  });
});
