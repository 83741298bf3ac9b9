#!/usr/bin/env node
// Test-only producer of keyless Sigstore evidence, made with tools nobody on tollgate wrote:
// sigstore-js (@sigstore/sign DSSEBundleBuilder + FulcioSigner + RekorWitness) signs an in-toto
// statement against @sigstore/mock's Fulcio served over HTTP on 127.0.0.1, the bundle is
// attached to an image with @sigstore/oci (as GitHub's actions/attest does), and a
// trusted_root.json made from the mock keys is written for tollgate's verifier.
// With `--signer python`, sigstore-python signs against the same servers instead.
//
// Two deliberate departures from the mocks, so that strict verifiers accept the output:
// - Rekor: @sigstore/mock's log stores the *proposed* entry as the body and proves it in a
//   one-leaf tree. `RekorLog` below (served through the mock's own `rekorHandler`) stores the
//   canonical body Rekor stores (dsse 0.0.1: envelopeHash, payloadHash, signatures with the
//   certificate re-encoded as canonical PEM), in a Merkle tree of several leaves with a real
//   RFC 6962 audit path, a signed entry timestamp (SET) and a signed checkpoint.
// - Identity: the mock Fulcio reads the OIDC token unverified; the SAN is its `sub` claim and
//   the issuer extension its `iss` claim. GitHub-style claims are added when the subject is a
//   GitHub workflow URL, so that the certificate carries the same extensions as GitHub's.
//
// Every result is checked before it is trusted: with @sigstore/verify here, and with
// sigstore-python when `--python` names an interpreter that has `sigstore` 4.5. A positive
// bundle must verify in both; a `--tamper` variant must be rejected by both.
//
//   node produce.mjs --registry 127.0.0.1:PORT --image acme/api --digest sha256:<hex> \
//     --predicate-type T --predicate FILE --issuer I --subject S \
//     --out-bundle F --out-trusted-root F [--out-trust-config F] [--no-attach] \
//     [--statement-digest sha256:<hex>] [--tamper payload|signature|integrated-time|certificate-root] \
//     [--signer js|python] [--python PATH]
//
// Prints one JSON object (the summary) on stdout; diagnostics go to stderr.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { bundleFromJSON, bundleToJSON } from '@sigstore/bundle';
import { fulcioHandler, initializeCA, initializeCTLog, rekorHandler } from '@sigstore/mock';
import { attachArtifactToImage } from '@sigstore/oci';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { DSSEBundleBuilder, FulcioSigner, RekorWitness } from '@sigstore/sign';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const INTOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
// Each negative variant, and how each independent verifier must reject it: for that reason and no
// other, so that a variant that broke something else by accident is caught here.
const TAMPERS = {
  payload: { sigstore_js: /^(SIGNATURE_ERROR|TLOG_BODY_ERROR)$/, sigstore_python: /signature|payload hash/ },
  signature: { sigstore_js: /^(SIGNATURE_ERROR|TLOG_BODY_ERROR)$/, sigstore_python: /signature/ },
  'integrated-time': { sigstore_js: /^TLOG_INCLUSION_PROMISE_ERROR$/, sigstore_python: /SET: invalid inclusion promise/ },
  'certificate-root': { sigstore_js: /^CERTIFICATE_ERROR$/, sigstore_python: /certificate chain/ },
};
// Moving integratedTime by this much breaks the SET and nothing else: the mock certificate is
// valid for 10 minutes from issuance, so the moved time still lies within it.
const INTEGRATED_TIME_SHIFT = 120;

function die(message) {
  process.stderr.write(`produce.mjs: ${message}\n`);
  process.exit(2);
}

function options() {
  const { values } = parseArgs({
    options: {
      registry: { type: 'string' },
      image: { type: 'string' },
      digest: { type: 'string' },
      'statement-digest': { type: 'string' },
      'subject-name': { type: 'string' },
      'predicate-type': { type: 'string' },
      predicate: { type: 'string' },
      issuer: { type: 'string', default: 'https://token.actions.githubusercontent.com' },
      subject: {
        type: 'string',
        default: 'https://github.com/acme/api/.github/workflows/release.yml@refs/tags/v1.0.0',
      },
      'out-bundle': { type: 'string' },
      'out-trusted-root': { type: 'string' },
      'out-trust-config': { type: 'string' },
      'no-attach': { type: 'boolean', default: false },
      tamper: { type: 'string' },
      signer: { type: 'string', default: 'js' },
      python: { type: 'string' },
    },
    strict: true,
  });
  for (const k of ['digest', 'predicate-type', 'predicate', 'out-bundle', 'out-trusted-root']) {
    if (!values[k]) die(`--${k} is required`);
  }
  if (!/^sha256:[0-9a-f]{64}$/.test(values.digest)) die(`--digest must be sha256:<64 hex>, got ${values.digest}`);
  values['statement-digest'] ??= values.digest;
  if (!/^sha256:[0-9a-f]{64}$/.test(values['statement-digest'])) die('--statement-digest must be sha256:<64 hex>');
  if (!values['no-attach'] && (!values.registry || !values.image)) die('--registry and --image are required unless --no-attach');
  if (values.tamper && !TAMPERS[values.tamper]) die(`--tamper must be one of ${Object.keys(TAMPERS).join(', ')}`);
  if (!['js', 'python'].includes(values.signer)) die('--signer must be js or python');
  if (values.signer === 'python' && !values.python) die('--signer python needs --python PATH (a venv with sigstore 4.5)');
  return values;
}

// ---------------------------------------------------------------------------------------------
// Small encodings

/** RFC 8785 (JCS) for the values used here: strings, integers, arrays, objects. */
function canonicalize(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalize).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalize(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

const sha256 = (...parts) => {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** PEM as Go's pem.Encode and Python's cryptography write it (64-column lines). */
function canonicalPEM(der) {
  const lines = Buffer.from(der).toString('base64').match(/.{1,64}/g);
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

function pemToDER(pem) {
  return Buffer.from(pem.replace(/-----(BEGIN|END) [^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

const spkiDER = (keyObject) => keyObject.export({ format: 'der', type: 'spki' });

// ---------------------------------------------------------------------------------------------
// Identity token: what the mock Fulcio reads (unverified, as Fulcio's client side is).

function identityToken(issuer, subject) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: issuer, sub: subject, aud: 'sigstore', iat: now, nbf: now, exp: now + 600 };
  const gh = /^https:\/\/github\.com\/([^/]+)\/([^/]+)\/(\.github\/workflows\/[^@]+)@(.+)$/.exec(subject);
  if (gh) {
    const [, owner, repo, workflow, ref] = gh;
    Object.assign(claims, {
      repository: `${owner}/${repo}`,
      repository_owner: owner,
      ref,
      sha: 'b4e0c1f2a3d4e5f60718293a4b5c6d7e8f901234',
      event_name: 'push',
      workflow: path.basename(workflow),
      workflow_ref: `${owner}/${repo}/${workflow}@${ref}`,
      job_workflow_ref: `${owner}/${repo}/${workflow}@${ref}`,
      runner_environment: 'github-hosted',
    });
  }
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid: 'tollgate-test' }));
  const body = b64url(JSON.stringify(claims));
  const sig = crypto.sign('sha256', Buffer.from(`${header}.${body}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${header}.${body}.${b64url(sig)}`;
}

// ---------------------------------------------------------------------------------------------
// Rekor: the log that @sigstore/mock's rekorHandler serves, with canonical bodies and real proofs.

/** Rekor's canonical body for a proposed entry (what Rekor stores and what the SET covers). */
function canonicalBody(proposed) {
  if (proposed.kind === 'dsse' && proposed.apiVersion === '0.0.1' && proposed.spec?.proposedContent) {
    const { envelope: envelopeJSON, verifiers } = proposed.spec.proposedContent;
    const envelope = JSON.parse(envelopeJSON);
    const verifier = Buffer.from(canonicalPEM(pemToDER(Buffer.from(verifiers[0], 'base64').toString()))).toString('base64');
    return {
      apiVersion: '0.0.1',
      kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256(envelopeJSON).toString('hex') },
        payloadHash: { algorithm: 'sha256', value: sha256(Buffer.from(envelope.payload, 'base64')).toString('hex') },
        signatures: envelope.signatures.map((s) => ({ signature: s.sig, verifier })),
      },
    };
  }
  throw new Error(`this test log only takes dsse 0.0.1 entries, got ${proposed.kind} ${proposed.apiVersion}`);
}

const leafHash = (data) => sha256(Buffer.from([0]), data);
const nodeHash = (l, r) => sha256(Buffer.from([1]), l, r);
const splitPoint = (n) => 2 ** Math.floor(Math.log2(n - 1));

/** RFC 6962 §2.1: the Merkle tree hash of leaf hashes. */
function treeHash(leaves) {
  if (leaves.length === 1) return leaves[0];
  const k = splitPoint(leaves.length);
  return nodeHash(treeHash(leaves.slice(0, k)), treeHash(leaves.slice(k)));
}

/** RFC 6962 §2.1.1: the audit path of leaf m, from the leaf up. */
function auditPath(m, leaves) {
  if (leaves.length <= 1) return [];
  const k = splitPoint(leaves.length);
  return m < k
    ? [...auditPath(m, leaves.slice(0, k)), treeHash(leaves.slice(k))]
    : [...auditPath(m - k, leaves.slice(k)), treeHash(leaves.slice(0, k))];
}

class RekorLog {
  constructor(keyPair) {
    this.privateKey = keyPair.privateKey;
    this.publicKey = spkiDER(keyPair.publicKey);
    this.logID = sha256(this.publicKey);
    this.treeID = crypto.randomInt(2 ** 47);
    // A sharded log: global log indices start past earlier shards, tree indices at 0.
    this.shardOffset = 1_000_000 + crypto.randomInt(1_000_000);
    // Other people's entries, so that the inclusion proof has a real audit path.
    this.leaves = Array.from({ length: 3 + crypto.randomInt(9) }, () => leafHash(crypto.randomBytes(64)));
    this.last = undefined;
    this.origin = undefined; // the log's host name, set once it is served (see `main`)
  }

  // The interface rekorHandler calls.
  async log(proposed) {
    const body = Buffer.from(canonicalize(canonicalBody(proposed)));
    const index = this.leaves.length;
    this.leaves.push(leafHash(body));
    // A few later entries too, so that the leaf is not always the right edge of the tree.
    for (let i = crypto.randomInt(4); i > 0; i--) this.leaves.push(leafHash(crypto.randomBytes(64)));
    const treeSize = this.leaves.length;
    const rootHash = treeHash(this.leaves);
    const hashes = auditPath(index, this.leaves);
    const integratedTime = Math.floor(Date.now() / 1000);
    const logIndex = this.shardOffset + index;
    const logID = this.logID.toString('hex');
    const set = crypto.sign(
      'sha256',
      Buffer.from(canonicalize({ body: body.toString('base64'), integratedTime, logID, logIndex })),
      this.privateKey,
    );
    const note = `${this.origin} - ${this.treeID}\n${treeSize}\n${rootHash.toString('base64')}\nTimestamp: ${integratedTime * 1e9}\n`;
    const noteSig = crypto.sign('sha256', Buffer.from(note), this.privateKey);
    const checkpoint = `${note}\n\u2014 ${this.origin} ${Buffer.concat([this.logID.subarray(0, 4), noteSig]).toString('base64')}\n`;
    this.last = { treeSize, leafIndex: index, logIndex, auditPathLength: hashes.length };
    return {
      [crypto.randomBytes(32).toString('hex')]: {
        body: body.toString('base64'),
        integratedTime,
        logID,
        logIndex,
        verification: {
          inclusionProof: {
            logIndex: index,
            treeSize,
            rootHash: rootHash.toString('hex'),
            hashes: hashes.map((h) => h.toString('hex')),
            checkpoint,
          },
          signedEntryTimestamp: set.toString('base64'),
        },
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Serving mock handlers ({path, fn(body) → {statusCode, response, contentType}}) on loopback.

async function serve(handler, adapt = (_headers, body) => body) {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      if (req.method !== 'POST' || req.url !== handler.path) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`no ${req.method} ${req.url} here`);
        return;
      }
      try {
        const { statusCode, response, contentType } = await handler.fn(adapt(req.headers, Buffer.concat(chunks).toString()));
        if (statusCode >= 400) process.stderr.write(`produce.mjs: mock ${handler.path} answered ${statusCode}: ${response}\n`);
        res.writeHead(statusCode, { 'content-type': contentType || 'text/plain' }).end(response);
      } catch (e) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e?.stack || e));
      }
    });
  });
  await new Promise((resolve, reject) => server.listen(0, '127.0.0.1', resolve).on('error', reject));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/**
 * Fulcio takes the OIDC token in the body or as `Authorization: Bearer`, and the CSR as the base64
 * of its PEM (proto `bytes`). The mock reads only the body and wants the CSR as PEM: sigstore-js
 * sends that form, sigstore-python the other, which this turns into the first.
 */
function fulcioRequestForMock(headers, body) {
  const json = JSON.parse(body);
  const bearer = /^Bearer (.+)$/.exec(headers.authorization || '');
  if (!json.credentials && bearer) json.credentials = { oidcIdentityToken: bearer[1] };
  const csr = json.certificateSigningRequest;
  if (csr && !csr.startsWith('-----BEGIN')) json.certificateSigningRequest = Buffer.from(csr, 'base64').toString();
  return JSON.stringify(json);
}

async function fulcio(ctKeys) {
  const caKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ca = await initializeCA(caKeys, await initializeCTLog(ctKeys));
  return { ca, ...(await serve(fulcioHandler(ca, { strict: true }), fulcioRequestForMock)) };
}

// ---------------------------------------------------------------------------------------------
// Trust: trusted_root.json (what tollgate pins) and sigstore-python's client trust config.

function trustedRoot({ ca, fulcioURL, ctKeys, rekor, rekorURL, since }) {
  const start = since.toISOString();
  const ctKey = spkiDER(ctKeys.publicKey);
  const json = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: rekorURL,
        hashAlgorithm: 'SHA2_256',
        publicKey: { rawBytes: rekor.publicKey.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
        logId: { keyId: rekor.logID.toString('base64') },
      },
    ],
    certificateAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
        uri: fulcioURL,
        certChain: { certificates: [{ rawBytes: ca.rootCertificate.toString('base64') }] },
        validFor: { start },
      },
    ],
    ctlogs: [
      {
        baseUrl: 'https://ctfe.sigstore.mock',
        hashAlgorithm: 'SHA2_256',
        publicKey: { rawBytes: ctKey.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
        logId: { keyId: sha256(ctKey).toString('base64') },
      },
    ],
    timestampAuthorities: [],
  };
  // Round-trip through the protobuf-specs type: a field it does not know would be dropped here
  // (proto3 JSON leaves out the empty list, which is put back before comparing).
  const roundTrip = { timestampAuthorities: [], ...TrustedRoot.toJSON(TrustedRoot.fromJSON(json)) };
  if (canonicalize(roundTrip) !== canonicalize(json)) {
    throw new Error(`trusted root does not round-trip:\n${JSON.stringify(json)}\n${JSON.stringify(roundTrip)}`);
  }
  return json;
}

function clientTrustConfig(root, { fulcioURL, rekorURL, since }) {
  const service = (url) => ({ url, majorApiVersion: 1, validFor: { start: since.toISOString() }, operator: 'sigstore.mock' });
  return {
    mediaType: 'application/vnd.dev.sigstore.clienttrustconfig.v0.1+json',
    trustedRoot: root,
    signingConfig: {
      mediaType: 'application/vnd.dev.sigstore.signingconfig.v0.2+json',
      caUrls: [service(fulcioURL)],
      oidcUrls: [],
      rekorTlogUrls: [service(rekorURL)],
      tsaUrls: [],
      rekorTlogConfig: { selector: 'ANY' },
      tsaConfig: { selector: 'ANY' },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Signing

async function signWithJS({ statement, token, fulcioURL, rekorURL }) {
  const builder = new DSSEBundleBuilder({
    signer: new FulcioSigner({ identityProvider: { getToken: async () => token }, fulcioBaseURL: fulcioURL }),
    witnesses: [new RekorWitness({ rekorBaseURL: rekorURL, entryType: 'dsse' })],
  });
  const bundle = await builder.create({ data: Buffer.from(statement), type: INTOTO_PAYLOAD_TYPE });
  return bundleToJSON(bundle);
}

function run(cmd, args, opts = {}) {
  // Asynchronous on purpose: the mock servers in this process must keep answering meanwhile.
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function signWithPython({ python, statement, token, trustConfig, work }) {
  const statementFile = path.join(work, 'statement.json');
  const tokenFile = path.join(work, 'token.jwt');
  const configFile = path.join(work, 'trust_config.json');
  const out = path.join(work, 'python.bundle.json');
  fs.writeFileSync(statementFile, statement);
  fs.writeFileSync(tokenFile, token);
  fs.writeFileSync(configFile, JSON.stringify(trustConfig, null, 2));
  const r = await run(python, [
    path.join(HERE, 'sigstore_py.py'), 'sign',
    '--trust-config', configFile, '--token-file', tokenFile, '--statement', statementFile, '--out', out,
  ]);
  if (r.code !== 0) throw new Error(`sigstore-python could not sign (exit ${r.code}):\n${r.stderr}${r.stdout}`);
  return JSON.parse(fs.readFileSync(out, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// Negative variants, made after signing (except certificate-root, which signs with another CA).

function tamper(bundle, how) {
  const b = structuredClone(bundle);
  switch (how) {
    case 'payload': {
      // Same subject, different claim: only the signature (and the log's payload hash) can tell.
      const statement = JSON.parse(Buffer.from(b.dsseEnvelope.payload, 'base64').toString());
      statement.predicate = { ...statement.predicate, tampered: true };
      b.dsseEnvelope.payload = Buffer.from(JSON.stringify(statement)).toString('base64');
      break;
    }
    case 'signature': {
      const sig = Buffer.from(b.dsseEnvelope.signatures[0].sig, 'base64');
      sig[sig.length - 1] ^= 0x01; // still well-formed DER: only the value of s changes
      b.dsseEnvelope.signatures[0].sig = sig.toString('base64');
      break;
    }
    case 'integrated-time': {
      const entry = b.verificationMaterial.tlogEntries[0];
      entry.integratedTime = String(Number(entry.integratedTime) + INTEGRATED_TIME_SHIFT);
      break;
    }
    default:
      break;
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Independent checks

function verifyWithJS(bundleJSON, root, { issuer, subject }) {
  try {
    const verifier = new Verifier(toTrustMaterial(TrustedRoot.fromJSON(root)));
    verifier.verify(toSignedEntity(bundleFromJSON(bundleJSON)), {
      subjectAlternativeName: subject,
      extensions: { issuer },
    });
    return { ok: true };
  } catch (e) {
    return { ok: false, code: e.code || e.name, error: e.message };
  }
}

async function verifyWithPython(python, bundleFile, rootFile, { issuer, subject }) {
  const r = await run(python, [
    path.join(HERE, 'sigstore_py.py'), 'verify',
    '--trusted-root', rootFile, '--bundle', bundleFile, '--issuer', issuer, '--subject', subject,
  ]);
  if (r.code !== 0 && r.code !== 1) throw new Error(`sigstore_py.py verify failed to run (exit ${r.code}):\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const o = options();
  // A hung server or client must fail the test that ran this, not hold it forever.
  setTimeout(() => die('gave up after 120 s'), 120_000).unref();
  const since = new Date(Date.now() - 60_000);
  const identity = { issuer: o.issuer, subject: o.subject };
  const ctKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const trusted = await fulcio(ctKeys);
  // A CA that no trusted root names, with the same (trusted) CT log: only the chain is wrong.
  const rogue = o.tamper === 'certificate-root' ? await fulcio(ctKeys) : undefined;
  const rekor = new RekorLog(crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }));
  const rekorServer = await serve(rekorHandler(rekor, { strict: true }));
  // Checkpoints are signed under the log's host name, as rekor.sigstore.dev signs as
  // `rekor.sigstore.dev`: sigstore-js finds the log key by matching it against the baseUrl.
  rekor.origin = new URL(rekorServer.url).host;
  const servers = [trusted, rogue, rekorServer].filter(Boolean);

  try {
    const root = trustedRoot({ ca: trusted.ca, fulcioURL: trusted.url, ctKeys, rekor, rekorURL: rekorServer.url, since });
    const signingFulcio = rogue || trusted;
    const trustConfig = clientTrustConfig(
      rogue ? { ...root, certificateAuthorities: [{ ...root.certificateAuthorities[0], certChain: { certificates: [{ rawBytes: rogue.ca.rootCertificate.toString('base64') }] } }] } : root,
      { fulcioURL: signingFulcio.url, rekorURL: rekorServer.url, since },
    );

    const subjectName = o['subject-name'] || (o.registry && o.image ? `${o.registry}/${o.image}` : o.image || 'artifact');
    const statement = JSON.stringify({
      _type: 'https://in-toto.io/Statement/v1',
      subject: [{ name: subjectName, digest: { sha256: o['statement-digest'].slice('sha256:'.length) } }],
      predicateType: o['predicate-type'],
      predicate: JSON.parse(fs.readFileSync(o.predicate, 'utf8')),
    });
    const token = identityToken(o.issuer, o.subject);

    const work = fs.mkdtempSync(path.join(path.dirname(path.resolve(o['out-bundle'])), '.produce-'));
    let signed;
    try {
      signed = o.signer === 'js'
        ? await signWithJS({ statement, token, fulcioURL: signingFulcio.url, rekorURL: rekorServer.url })
        : await signWithPython({ python: o.python, statement, token, trustConfig, work });
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
    const bundle = tamper(signed, o.tamper);
    const bytes = Buffer.from(JSON.stringify(bundle));
    fs.writeFileSync(o['out-bundle'], bytes);
    fs.writeFileSync(o['out-trusted-root'], JSON.stringify(root, null, 2));
    if (o['out-trust-config']) fs.writeFileSync(o['out-trust-config'], JSON.stringify(trustConfig, null, 2));

    // Check before trusting: positive output must verify, a tampered one must not.
    const expectOk = !o.tamper;
    const checks = { sigstore_js: verifyWithJS(bundle, root, identity) };
    if (o.python) {
      checks.sigstore_python = await verifyWithPython(o.python, o['out-bundle'], o['out-trusted-root'], identity);
    }
    for (const [name, r] of Object.entries(checks)) {
      const what = o.tamper ? `--tamper ${o.tamper}` : 'untampered';
      if (r.ok !== expectOk) {
        throw new Error(`${name} ${r.ok ? 'accepted' : 'rejected'} the ${what} bundle${r.error ? `: ${r.code} ${r.error}` : ''}`);
      }
      const reason = o.tamper && TAMPERS[o.tamper][name];
      if (reason && !reason.test(name === 'sigstore_js' ? r.code : r.error)) {
        throw new Error(`${name} rejected the ${what} bundle for another reason than expected (${reason}): ${r.code} ${r.error}`);
      }
    }

    let referrer;
    if (!o['no-attach']) {
      const descriptor = await attachArtifactToImage({
        credentials: undefined, // anonymous registry; @sigstore/oci uses plain HTTP for 127.0.0.1 and localhost
        imageName: `${o.registry}/${o.image}`,
        imageDigest: o.digest,
        artifact: bytes,
        mediaType: BUNDLE_MEDIA_TYPE,
        annotations: {
          'dev.sigstore.bundle.content': 'dsse-envelope',
          'dev.sigstore.bundle.predicateType': o['predicate-type'],
        },
      });
      referrer = descriptor.digest;
    }

    const summary = {
      signer: o.signer,
      tamper: o.tamper ?? null,
      bundle: path.resolve(o['out-bundle']),
      bundle_digest: `sha256:${sha256(bytes).toString('hex')}`,
      trusted_root: path.resolve(o['out-trusted-root']),
      trust_config: o['out-trust-config'] ? path.resolve(o['out-trust-config']) : null,
      image: o.registry && o.image ? `${o.registry}/${o.image}` : null,
      digest: o.digest,
      statement_digest: o['statement-digest'],
      predicate_type: o['predicate-type'],
      identity,
      referrer: referrer ?? null,
      tlog: rekor.last,
      checks,
    };
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  } finally {
    for (const s of servers) s.server.close();
  }
}

main().catch((e) => die(e?.stack || String(e)));
