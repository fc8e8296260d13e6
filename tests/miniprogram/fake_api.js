/**
 * Canned answers shaped like the gateway's (wechat_adapter/views): the same ids, statuses, signed
 * audio links, error bodies and Retry-After headers. Presets, error messages and the session length
 * come from the Python side (common.presets, wechat_adapter.errors, Settings), and the test validates
 * every answer given here against the OpenAPI document, so these fakes cannot drift from the server.
 */
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** An id shaped like common.ids.new_id: prefix, "_", 26 base32 characters. */
function fakeId(prefix, n) {
  let body = '';
  for (let v = n; body.length < 26; v = Math.floor(v / 32)) body = BASE32[v % 32] + body;
  return `${prefix}_${body}`;
}

function isoAt(ms) {
  return new Date(Date.UTC(2025, 0, 1) + ms).toISOString();
}

// Default story of a task, one status per GET: it waits, runs a while, then succeeds.
const DEFAULT_TASK_SCRIPT = ['queued', 'queued', 'running', 'running', 'succeeded'];
// How the default audio stream plays out (FakeApi.streamPlan): its headers come this long after the
// request (the first audio of a synthesis), then a chunk of this much audio every as long, as a
// GPU makes them; an odd number of bytes in every other chunk, as TCP may cut them.
const STREAM_FIRST_AUDIO_MS = 300;
const STREAM_CHUNK_MS = 250;

/** s16le bytes of these integer sample values. */
function s16le(values) {
  const bytes = new Uint8Array(values.length * 2);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setInt16(i * 2, v, true));
  return bytes;
}

/** `n` samples of a 440 Hz tone at `rateHz`, as s16 integers: something to listen to, and to compare. */
function tone(n, rateHz, offset = 0) {
  const at = (i) => (2 * Math.PI * 440 * (offset + i)) / rateHz;
  return Array.from({ length: n }, (_, i) => Math.round(12000 * Math.sin(at(i))));
}

class FakeApi {
  constructor({ baseUrl, fixtures, clock }) {
    this.baseUrl = baseUrl;
    this.fixtures = fixtures;
    this.clock = clock;
    this.tokens = new Set();
    this.voices = new Map();
    this.tasks = new Map();
    this.idempotency = new Map();
    this.faults = [];
    this.counter = 0;
    this.reviewAfterGets = 2; // GET /v1/voices/{id} calls before WeChat's verdict "arrives"
    this.reviewVerdict = 'ready';
    this.taskScript = DEFAULT_TASK_SCRIPT;
    // A task's audio: its `duration_s` once succeeded, and what its stream brings. 'auto': each
    // stream plays itself out on the virtual clock (streamPlan); 'manual': the scenario drives
    // world.ui.streams[i] itself.
    this.audioSeconds = 3.4;
    this.streamRateHz = 24000;
    this.streamMode = 'auto';
  }

  // --- what scenarios set up -----------------------------------------------------------------------

  /** The next `times` calls matching method and path answer `reply` instead. */
  failNext(method, pathPattern, reply, times = 1) {
    this.faults.push({ method, pathPattern, reply, times });
  }

  addVoice(fields = {}) {
    const voiceId = fakeId('v', ++this.counter);
    const voice = {
      voice_id: voiceId,
      name: '我的声音',
      status: 'ready',
      duration_s: 6.2,
      prompt_text: '今天天气很好，我们一起去公园散步。',
      created_at: isoAt(this.clock.now),
      consent: 'self',
      audio_url: `${this.baseUrl}/v1/voices/${voiceId}/audio?sig=sig-${voiceId}`,
      ...fields,
    };
    this.voices.set(voiceId, { voice, gets: 0 });
    return voice;
  }

  addTask(fields = {}, script = ['succeeded']) {
    const task = this.newTask({
      text: '你好，世界',
      voice_id: fakeId('v', 9999), // a voice since deleted, unless the scenario says otherwise
      mode: 'zero_shot',
      format: 'mp3',
      ...fields,
    });
    this.tasks.set(task.task_id, { task, script, gets: 0 });
    this.advanceTask(this.tasks.get(task.task_id));
    return this.tasks.get(task.task_id).task;
  }

  // --- answering -----------------------------------------------------------------------------------

  error(code, retryAfterS) {
    const [status, message] = this.fixtures.errors[code];
    const headers = { 'Content-Type': 'application/json; charset=utf-8' };
    if (retryAfterS !== undefined) headers['Retry-After'] = String(retryAfterS);
    return { status, body: { error: { code, message } }, headers };
  }

  json(status, body) {
    return { status, body, headers: { 'Content-Type': 'application/json; charset=utf-8' } };
  }

  /** The reply to one recorded call: `{status, body, headers}` or `{networkError}`. */
  handle(call) {
    if (!call.url.startsWith(this.baseUrl)) return { networkError: 'url not in domain list' };
    const url = new URL(call.url);
    const path = url.pathname;
    const fault = this.faults.find((f) => f.method === call.method && new RegExp(f.pathPattern).test(path));
    if (fault) {
      fault.times -= 1;
      if (fault.times <= 0) this.faults.splice(this.faults.indexOf(fault), 1);
      return typeof fault.reply === 'function' ? fault.reply(this) : fault.reply;
    }
    if (path === '/v1/session' && call.method === 'POST') return this.createSession(call);
    const streamMatch = path.match(/^\/v1\/syntheses\/([^/]+)\/stream$/);
    if (streamMatch && call.method === 'GET' && url.searchParams.has('sig')) {
      // A signed link (`stream_url`): the signature, not a token, says whose task it is.
      const taskId = decodeURIComponent(streamMatch[1]);
      if (url.searchParams.get('sig') !== `sig-stream-${taskId}`) return this.error('unauthorized');
      return this.stream(taskId, url.searchParams.get('format') || 'mp3');
    }
    const auth = (call.header && call.header.Authorization) || '';
    const token = auth.replace(/^Bearer /, '');
    if (!this.tokens.has(token)) return this.error('unauthorized');
    return this.route(call, path, url.searchParams, token);
  }

  route(call, path, query, token) {
    const voiceMatch = path.match(/^\/v1\/voices\/([^/]+)$/);
    const taskMatch = path.match(/^\/v1\/syntheses\/([^/]+)$/);
    const key = `${call.method} ${voiceMatch ? '/v1/voices/{id}' : taskMatch ? '/v1/syntheses/{id}' : path}`;
    switch (key) {
      case 'DELETE /v1/session':
        this.tokens.delete(token); // revoked: the next call with it answers 401
        return { status: 204, body: '', headers: {} };
      case 'DELETE /v1/me':
        return this.erase();
      case 'GET /v1/presets':
        return this.json(200, { presets: this.fixtures.presets });
      case 'GET /v1/voices':
        return this.json(200, { voices: [...this.voices.values()].map((v) => v.voice).reverse() });
      case 'POST /v1/voices':
        return this.createVoice(call);
      case 'GET /v1/voices/{id}':
        return this.getVoice(decodeURIComponent(voiceMatch[1]));
      case 'DELETE /v1/voices/{id}':
        return this.voices.delete(decodeURIComponent(voiceMatch[1]))
          ? { status: 204, body: '', headers: {} }
          : this.error('not_found');
      case 'POST /v1/syntheses':
        return this.createTask(call);
      case 'GET /v1/syntheses':
        return this.json(200, { tasks: this.newestTasks(Number(query.get('limit') || 20)) });
      case 'GET /v1/syntheses/{id}':
        return this.getTask(decodeURIComponent(taskMatch[1]));
      default:
        return this.error(call.method === 'GET' ? 'not_found' : 'method_not_allowed');
    }
  }

  /**
   * GET /v1/syntheses/{id}/stream: the response's status and headers (the body comes in chunks, see
   * streamPlan). A final task that failed has no audio, hence no sample rate.
   */
  stream(taskId, format) {
    const entry = this.tasks.get(taskId);
    if (!entry) return this.error('not_found');
    if (!['mp3', 'pcm'].includes(format)) return this.error('invalid_request');
    const headers = {
      'Content-Type': format === 'pcm' ? 'application/octet-stream' : 'audio/mpeg',
      'Cache-Control': 'no-store',
      'X-Task-Status': entry.task.status,
    };
    if (!['failed', 'rejected'].includes(entry.task.status)) {
      headers['X-Audio-Sample-Rate'] = String(this.streamRateHz);
    }
    return { status: 200, body: '', headers };
  }

  /**
   * How a stream plays out when no scenario drives it: the whole of `audioSeconds` as PCM, a chunk
   * every STREAM_CHUNK_MS, then the end. An error reply or a task without audio ends at once.
   */
  streamPlan(reply) {
    const plan = { headersAfterMs: STREAM_FIRST_AUDIO_MS, chunks: [], finishAfterMs: STREAM_FIRST_AUDIO_MS };
    if (reply.status !== 200 || !reply.headers['X-Audio-Sample-Rate']) return plan;
    const bytes = s16le(tone(Math.round(this.audioSeconds * this.streamRateHz), this.streamRateHz));
    const perChunk = Math.round((this.streamRateHz * 2 * STREAM_CHUNK_MS) / 1000);
    for (let at = 0, i = 0; at < bytes.length; i++) {
      const end = Math.min(bytes.length, at + perChunk + (i % 2 === 0 ? 1 : -1));
      plan.chunks.push({ atMs: STREAM_FIRST_AUDIO_MS + i * STREAM_CHUNK_MS, bytes: bytes.subarray(at, end) });
      at = end;
    }
    plan.finishAfterMs = STREAM_FIRST_AUDIO_MS + plan.chunks.length * STREAM_CHUNK_MS;
    return plan;
  }

  /** The right to erasure: everything goes, and every token (the fake has one user) is revoked. */
  erase() {
    this.voices.clear();
    this.tasks.clear();
    this.idempotency.clear();
    this.tokens.clear();
    return { status: 204, body: '', headers: {} };
  }

  newestTasks(limit) {
    return [...this.tasks.values()]
      .map((entry) => entry.task)
      .reverse()
      .slice(0, limit);
  }

  createSession(call) {
    const token = `token-${++this.counter}`;
    this.tokens.add(token);
    const openid = `o-openid-${call.data.code}`;
    return this.json(200, { token, expires_in: this.fixtures.sessionTtlS, openid });
  }

  createVoice(call) {
    if (!call.formData.consent) return this.error('consent_required'); // as the gateway refuses it
    // The fake recorder names files after their length, as a stand-in for decoding them.
    const ms = Number((call.filePath.match(/_(\d+)ms\./) || [])[1] || 6000);
    const voice = this.addVoice({
      name: call.formData.name || '我的声音',
      status: 'pending_review',
      duration_s: ms / 1000,
      prompt_text: call.formData.prompt_text,
      consent: call.formData.consent,
    });
    return this.json(201, voice);
  }

  getVoice(voiceId) {
    const entry = this.voices.get(voiceId);
    if (!entry) return this.error('not_found');
    entry.gets += 1;
    if (entry.voice.status === 'pending_review' && entry.gets >= this.reviewAfterGets) {
      entry.voice = { ...entry.voice, status: this.reviewVerdict };
    }
    return this.json(200, entry.voice);
  }

  newTask(fields) {
    const now = isoAt(this.clock.now);
    const taskId = fakeId('t', ++this.counter);
    const streamUrl = `${this.baseUrl}/v1/syntheses/${taskId}/stream?sig=sig-stream-${taskId}`;
    return {
      task_id: taskId,
      status: 'queued',
      created_at: now,
      updated_at: now,
      stream_url: streamUrl,
      ...fields,
    };
  }

  createTask(call) {
    const key = call.header['Idempotency-Key'];
    if (key && this.idempotency.has(key)) {
      const { task } = this.tasks.get(this.idempotency.get(key));
      return this.json(['succeeded', 'failed', 'rejected'].includes(task.status) ? 200 : 202, task);
    }
    const { text, voice_id: voiceId, mode = 'zero_shot', format = 'mp3', instruct } = call.data;
    if (!this.voices.has(voiceId)) return this.error('not_found');
    const task = this.newTask({ text, voice_id: voiceId, mode, format });
    if (instruct) task.instruct = instruct;
    this.tasks.set(task.task_id, { task, script: this.taskScript, gets: 0 });
    if (key) this.idempotency.set(key, task.task_id);
    return this.json(202, task);
  }

  getTask(taskId) {
    const entry = this.tasks.get(taskId);
    if (!entry) return this.error('not_found');
    this.advanceTask(entry);
    return this.json(200, entry.task);
  }

  /** The task's next status from its script, with the fields that status brings. */
  advanceTask(entry) {
    const status = entry.script[Math.min(entry.gets, entry.script.length - 1)];
    entry.gets += 1;
    if (status === entry.task.status) return;
    const task = { ...entry.task, status, updated_at: isoAt(this.clock.now) };
    if (status === 'succeeded') {
      task.audio_url = `${this.baseUrl}/v1/syntheses/${task.task_id}/audio?sig=sig-${task.task_id}`;
      task.duration_s = Math.round(this.audioSeconds * 1000) / 1000;
    }
    if (status === 'failed') {
      task.error = { code: 'synthesis_failed', message: '合成失败，请稍后再试' };
    }
    entry.task = task;
  }
}

module.exports = { FakeApi, fakeId, s16le, tone };
