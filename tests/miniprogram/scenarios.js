/**
 * What a user does in the mini program, driven through the pages' WXML-bound handlers against the
 * fake API. Each scenario gets a fresh world; assertions use node's assert. Every network call made
 * here is also handed to the Python test, which checks it against the OpenAPI document.
 */
const assert = require('assert/strict');
const { s16le, tone } = require('./fake_api');

const SYNTH = 'pages/synthesize/synthesize';
const RECORD = 'pages/record/record';
const HISTORY = 'pages/history/history';
const TASK = 'pages/task/task';

function callsTo(world, method, pathPattern) {
  const pattern = new RegExp(pathPattern);
  return world.calls.filter((c) => c.method === method && pattern.test(new URL(c.url).pathname));
}

function gaps(calls) {
  return calls.slice(1).map((c, i) => c.at - calls[i].at);
}

function taskResult(page) {
  const use = page.componentUses.find((u) => u.tag === 'task-result');
  assert.ok(use && use.instance, 'the page shows a <task-result>');
  return use.instance;
}

/** The stream requests the pages made: wx.request with enableChunked. */
function streamCalls(world) {
  return world.calls.filter((c) => c.enableChunked);
}

/** Each buffer starts where the one before ends: no gap, no overlap (a gap is heard as a click). */
function assertBackToBack(scheduled) {
  scheduled.slice(1).forEach((s, i) => {
    const before = scheduled[i];
    assert.equal(s.when, before.when + before.duration, `buffer ${i + 1} starts where buffer ${i} ends`);
  });
}

/** Submit `text` on the synthesis page; the task as the POST answered it. */
async function submitText(world, page, text) {
  await typeText(world, page, text);
  await world.runtime.trigger(page, 'submit');
  const posts = callsTo(world, 'POST', '^/v1/syntheses$');
  return posts[posts.length - 1].reply.body;
}

function fakeStatus(world, taskId) {
  return world.api.tasks.get(taskId).task.status;
}

function message(world, code) {
  return world.fixtures.errors[code][1];
}

async function typeText(world, page, text) {
  await world.runtime.trigger(page, 'onTextInput', { type: 'input', detail: { value: text } });
}

async function pickConsent(world, page, value) {
  await world.runtime.trigger(page, 'onConsentChange', { type: 'change', detail: { value } });
}

async function pickPreset(world, page, kind, presetId) {
  const group = page.data.presetGroups.find((g) => g.kind === kind);
  await world.runtime.trigger(page, 'onPresetChange', {
    type: 'change',
    dataset: { kind },
    detail: { value: String(group.ids.indexOf(presetId)) },
  });
}

/** What a reverse proxy in front of the gateway answers: HTML, not the API's error JSON. */
function proxyError(status, headers) {
  const body = `<html><body>${status}</body></html>`;
  return { status, body, headers, offContract: 'a reverse proxy, not the gateway' };
}

const scenarios = {};

scenarios['launch signs in once; every later call carries the stored token'] = async (world) => {
  await world.runtime.launch();
  const [login] = callsTo(world, 'POST', '^/v1/session$');
  assert.deepEqual(login.data, { code: 'code-1' });
  assert.equal(login.header.Authorization, undefined, 'the session call needs no token');
  assert.deepEqual(world.ui.audioOptions, [{ obeyMuteSwitch: false }]);

  await world.runtime.openPage(SYNTH);
  const token = login.reply.body.token;
  for (const call of [...callsTo(world, 'GET', '^/v1/voices$'), ...callsTo(world, 'GET', '^/v1/presets$')]) {
    assert.equal(call.header.Authorization, `Bearer ${token}`);
  }
  assert.equal(world.ui.logins, 1);
  const stored = world.storage.get('voicerelay.session');
  assert.equal(stored.token, token);
  assert.ok(stored.expiresAt > Date.now() + (world.fixtures.sessionTtlS - 60) * 1000);
};

scenarios['an expired token is renewed before it is sent'] = async (world) => {
  world.storage.set('voicerelay.session', { token: 'stale', openid: 'o', expiresAt: Date.now() - 1000 });
  await world.runtime.openPage(HISTORY);
  assert.equal(world.ui.logins, 1);
  assert.equal(world.calls[0].url.endsWith('/v1/session'), true, 'login comes first');
  assert.ok(world.calls.slice(1).every((c) => c.header.Authorization !== 'Bearer stale'));
};

scenarios['a 401 logs in again once; a second 401 shows the API message'] = async (world) => {
  await world.runtime.launch();
  world.api.failNext('GET', '^/v1/syntheses$', world.api.error('unauthorized'));
  const page = await world.runtime.openPage(HISTORY);
  assert.equal(world.ui.logins, 2);
  assert.equal(callsTo(world, 'GET', '^/v1/syntheses$').length, 2, 'retried once after the new login');
  assert.equal(page.data.errorMessage, '');

  world.api.failNext('GET', '^/v1/syntheses$', world.api.error('unauthorized'), 2);
  await page.onPullDownRefresh();
  await world.clock.settle();
  assert.equal(world.ui.logins, 3, 'exactly one more login, no loop');
  assert.equal(page.data.errorMessage, message(world, 'unauthorized'));
  assert.equal(world.ui.stoppedRefresh, 1);
};

scenarios['record, listen, upload with the shown sentence, then follow the review'] = async (world) => {
  await world.runtime.launch();
  const page = await world.runtime.openPage(RECORD);
  const sentence = page.data.sentence;
  assert.ok(sentence.length >= 10, 'a sentence to read is shown');
  assert.ok(sentence.startsWith('我是本人，同意用我的声音生成语音'), 'the first sentence states consent');
  assert.match(page.data.consentPrompt, /单独同意/);
  assert.deepEqual(
    page.data.consentOptions.map((o) => [o.value, o.label]),
    [
      ['self', '本人'],
      ['authorized', '已获授权'],
    ]
  );

  await world.runtime.trigger(page, 'startRecording');
  const [options] = world.ui.recorderStarts;
  assert.deepEqual(
    { format: options.format, sampleRate: options.sampleRate, numberOfChannels: options.numberOfChannels },
    { format: 'aac', sampleRate: 24000, numberOfChannels: 1 }
  );
  assert.ok(options.duration >= 10000 && options.duration <= world.fixtures.maxSpeechS * 1000);
  assert.equal(page.data.phase, 'recording');

  await world.clock.advance(6200);
  assert.equal(page.data.elapsedS, 6);
  await world.runtime.trigger(page, 'stopRecording');
  assert.equal(page.data.phase, 'recorded');
  assert.equal(page.data.recording.durationText, '6.2');

  await world.runtime.trigger(page, 'playRecording');
  assert.deepEqual(world.ui.audioPlays, [page.data.recording.filePath]);

  await world.runtime.trigger(page, 'onNameInput', { type: 'input', detail: { value: ' 妈妈的声音 ' } });
  await pickConsent(world, page, 'authorized');
  const filePath = page.data.recording.filePath;
  await world.runtime.trigger(page, 'upload');
  const [upload] = world.calls.filter((c) => c.kind === 'uploadFile');
  assert.equal(upload.name, 'file');
  assert.equal(upload.filePath, filePath);
  assert.deepEqual(upload.formData, { prompt_text: sentence, name: '妈妈的声音', consent: 'authorized' });
  assert.equal(page.data.phase, 'idle');
  assert.equal(page.data.consent, '', 'the next voice asks for consent again');
  assert.equal(page.data.voices[0].consent, 'authorized');
  assert.notEqual(page.data.sentence, sentence, 'a new sentence for the next recording');
  const voiceId = upload.reply.body.voice_id;
  assert.equal(page.data.voices[0].voice_id, voiceId);
  assert.equal(page.data.voices[0].statusText, '审核中');

  await world.clock.advance(60000);
  const reviews = callsTo(world, 'GET', `^/v1/voices/${voiceId}$`);
  assert.equal(reviews.length, 2, 'stops once the verdict is in');
  assert.deepEqual(gaps([upload, ...reviews]), [2000, 4000], 'review polling backs off');
  assert.equal(page.data.voices[0].status, 'ready');
  assert.ok(world.ui.toasts.includes('审核通过，可以合成了'));
};

scenarios['review polling pauses while the page is hidden'] = async (world) => {
  const voice = world.api.addVoice({ status: 'pending_review' });
  world.api.reviewAfterGets = 3;
  const page = await world.runtime.openPage(RECORD);
  await world.clock.advance(2000);
  assert.equal(callsTo(world, 'GET', `^/v1/voices/${voice.voice_id}$`).length, 1);
  await world.runtime.hide(page);
  await world.clock.advance(600000);
  assert.equal(callsTo(world, 'GET', `^/v1/voices/${voice.voice_id}$`).length, 1, 'nothing while hidden');
  await world.runtime.show(page);
  await world.clock.advance(2000 + 4000);
  assert.equal(page.data.voices[0].status, 'ready');
  assert.equal(world.clock.pendingCount(), 0);
};

scenarios['a recording under 3 s is refused before upload'] = async (world) => {
  const page = await world.runtime.openPage(RECORD);
  await world.runtime.trigger(page, 'startRecording');
  await world.clock.advance(2000);
  await world.runtime.trigger(page, 'stopRecording');
  assert.equal(page.data.phase, 'idle');
  assert.match(page.data.errorMessage, /太短/);
  assert.equal(world.calls.filter((c) => c.kind === 'uploadFile').length, 0);
};

scenarios['the recorder stops itself at the time limit'] = async (world) => {
  const page = await world.runtime.openPage(RECORD);
  await world.runtime.trigger(page, 'startRecording');
  await world.clock.advance(60000);
  assert.equal(page.data.phase, 'recorded');
  assert.equal(page.data.recording.durationText, (world.config.recording.maxDurationMs / 1000).toFixed(1));
};

scenarios['a phone call stops the recording and keeps what was said'] = async (world) => {
  const page = await world.runtime.openPage(RECORD);
  await world.runtime.trigger(page, 'startRecording');
  await world.clock.advance(4000);
  world.wx.recorder().interrupt();
  await world.clock.settle();
  assert.equal(page.data.phase, 'recorded');
  assert.equal(page.data.recording.durationText, '4.0');
};

scenarios['a denied microphone leads to the settings page'] = async (world) => {
  const page = await world.runtime.openPage(RECORD);
  world.wx.recorder().denyPermission = true;
  await world.runtime.trigger(page, 'startRecording');
  assert.deepEqual(world.ui.modals, ['需要使用麦克风']);
  assert.equal(world.ui.openedSettings, 1);
  assert.equal(page.data.phase, 'idle');
};

scenarios['an upload refusal shows the API message and keeps the recording'] = async (world) => {
  const page = await world.runtime.openPage(RECORD);
  await world.runtime.trigger(page, 'startRecording');
  await world.clock.advance(5000);
  await world.runtime.trigger(page, 'stopRecording');
  await pickConsent(world, page, 'self');
  world.api.failNext('POST', '^/v1/voices$', world.api.error('audio_silent'));
  await world.runtime.trigger(page, 'upload');
  assert.equal(page.data.errorMessage, message(world, 'audio_silent'));
  assert.ok(world.ui.toasts.includes(message(world, 'audio_silent')));
  assert.equal(page.data.phase, 'recorded');
};

scenarios['no upload until the consent of the voice owner is confirmed'] = async (world) => {
  const page = await world.runtime.openPage(RECORD);
  await world.runtime.trigger(page, 'startRecording');
  await world.clock.advance(5000);
  await world.runtime.trigger(page, 'stopRecording');
  assert.equal(page.data.consent, '');
  await world.runtime.trigger(page, 'upload');
  assert.equal(world.calls.filter((c) => c.kind === 'uploadFile').length, 0, 'blocked: nothing sent');
  assert.equal(page.data.errorMessage, message(world, 'consent_required'));
  assert.equal(page.data.phase, 'recorded', 'the recording is kept');

  await pickConsent(world, page, 'self');
  await world.runtime.trigger(page, 'upload');
  const [upload] = world.calls.filter((c) => c.kind === 'uploadFile');
  assert.equal(upload.formData.consent, 'self');
  assert.equal(upload.reply.status, 201);
};

scenarios['deleting a voice asks first, then deletes it'] = async (world) => {
  const voice = world.api.addVoice();
  const page = await world.runtime.openPage(RECORD);
  world.settings.modalConfirm = false;
  await world.runtime.trigger(page, 'deleteVoice', { dataset: { id: voice.voice_id } });
  assert.equal(callsTo(world, 'DELETE', '^/v1/voices/').length, 0, 'cancelled: nothing deleted');

  world.settings.modalConfirm = true;
  await world.runtime.trigger(page, 'playVoice', { dataset: { id: voice.voice_id } });
  assert.deepEqual(world.ui.audioPlays, [voice.audio_url]);
  await world.runtime.trigger(page, 'deleteVoice', { dataset: { id: voice.voice_id } });
  assert.equal(callsTo(world, 'DELETE', `^/v1/voices/${voice.voice_id}$`).length, 1);
  assert.deepEqual(page.data.voices, []);
};

scenarios['synthesis: preset, subscription, polling with backoff, A/B listening'] = async (world) => {
  const voice = world.api.addVoice({ name: '我的声音' });
  await world.runtime.launch();
  const page = await world.runtime.openPage(SYNTH);
  assert.deepEqual(page.data.voiceNames, ['我的声音']);
  assert.deepEqual(
    page.data.presetGroups.map((g) => g.kind),
    ['dialect', 'emotion', 'speed', 'volume']
  );
  const dialects = world.fixtures.presets.filter((p) => p.kind === 'dialect').map((p) => p.name);
  assert.deepEqual(page.data.presetGroups[0].names, ['不使用', ...dialects]);

  const text = '她[h][ào]干净，  每天都打扫房间。';
  await typeText(world, page, text);
  assert.equal(page.data.charCount, Array.from('她[h][ào]干净， 每天都打扫房间。').length);
  await pickPreset(world, page, 'dialect', 'sichuan');
  assert.equal(page.data.presetName, '四川话');
  await pickPreset(world, page, 'emotion', 'happy');
  assert.equal(page.data.presetId, 'happy');
  assert.equal(page.data.presetGroups[0].index, 0, 'one instruction at a time');
  await world.runtime.trigger(page, 'onSpeedChange', { type: 'change', detail: { value: 12 } });
  assert.equal(page.data.speedText, '1.2');

  await world.runtime.trigger(page, 'submit');
  assert.deepEqual(world.ui.subscribeRequests, [{ tmplIds: ['tmpl-finished'], inTap: true }]);
  const [post] = callsTo(world, 'POST', '^/v1/syntheses$');
  assert.deepEqual(post.data, {
    text,
    voice_id: voice.voice_id,
    mode: 'instruct',
    instruct: 'happy',
    format: 'mp3',
    speed: 1.2,
    notify: true,
  });
  assert.match(post.header['Idempotency-Key'], /^[ -~]{1,255}$/);
  const taskId = post.reply.body.task_id;
  assert.equal(page.data.taskId, taskId);

  await world.clock.advance(120000);
  const polls = callsTo(world, 'GET', `^/v1/syntheses/${taskId}$`);
  assert.equal(polls.length, 5, 'polling stops at the final status');
  assert.deepEqual(gaps(polls), [1000, 2000, 4000, 8000]);
  const result = taskResult(page);
  assert.equal(result.data.task.status, 'succeeded');
  assert.equal(result.data.sampleUrl, voice.audio_url, 'side A is the voice sample link');

  // Meanwhile the result played from its stream, as it was synthesised, and all of it: no file.
  const [stream] = world.ui.streams;
  assert.equal(stream.state, 'done');
  const [audio] = world.ui.webAudioContexts;
  assert.equal(audio.scheduled.reduce((n, s) => n + s.length, 0), Math.round(3.4 * world.api.streamRateHz));
  assertBackToBack(audio.scheduled);
  assert.ok(audio.scheduled.every((s) => s.clockMs < polls[4].at), 'all of it before the task succeeded');
  assert.deepEqual(world.ui.audioPlays, [], 'the stream was whole: the file is not played again');
  assert.equal(result.data.playing, '');

  await world.runtime.trigger(result, 'playSample');
  await world.runtime.trigger(result, 'playResult');
  assert.deepEqual(world.ui.audioPlays, [voice.audio_url, result.data.task.audio_url]);
  assert.equal(result.data.playing, 'result');
  await world.runtime.trigger(result, 'playResult');
  assert.equal(result.data.playing, '', 'tapping again stops');
  await world.runtime.trigger(result, 'playSample');
  world.ui.audioContexts[0].finish();
  assert.equal(result.data.playing, '', 'the end of a clip resets the buttons');
  assert.equal(world.ui.audioContexts.length, 1, 'A and B share one player: never both at once');
};

scenarios['the result plays as it is synthesised: chunk by chunk, back to back, odd bytes carried'] = async (
  world
) => {
  world.api.addVoice();
  world.api.streamMode = 'manual';
  const rateHz = 22050; // the CPU engine's rate: whatever the header says is used
  world.api.streamRateHz = rateHz;
  const values = tone(3 * 2205, rateHz);
  values[2205 + 1102] = -12345; // the sample whose two bytes arrive in different chunks
  world.api.audioSeconds = values.length / rateHz; // the stream brings the whole file
  const page = await world.runtime.openPage(SYNTH);
  const task = await submitText(world, page, '你好，边合成边播放。');

  const [request] = streamCalls(world);
  assert.equal(request.url, `${task.stream_url}&format=pcm`);
  assert.equal(request.method, 'GET');
  assert.equal(request.responseType, 'arraybuffer');
  assert.equal(request.header.Authorization, undefined, 'the signed link is the credential');
  assert.ok(world.ui.canIUse.includes('request.object.enableChunked'));
  assert.ok(world.ui.canIUse.includes('createWebAudioContext'));
  const [stream] = world.ui.streams;
  const [audio] = world.ui.webAudioContexts;
  const result = taskResult(page);

  audio.freeze(5); // the audio clock stands still: every buffer must follow the one before
  stream.sendHeaders({ lowercase: true }); // x-audio-sample-rate, as HTTP/2 names it
  const bytes = s16le(values);
  const cut = 2 * 2205;
  stream.send(bytes.subarray(0, cut));
  await world.clock.settle();
  assert.equal(audio.scheduled.length, 1, 'the first chunk plays at once');
  const [first] = audio.scheduled;
  assert.ok(first.when > 5 && first.when <= 5.2, `scheduled just ahead of the clock, at ${first.when}`);
  assert.equal(result.data.playing, 'stream');
  assert.notEqual(fakeStatus(world, task.task_id), 'succeeded', 'playing before the task is finished');

  stream.send(bytes.subarray(cut, 2 * cut + 1)); // ends with the first byte of sample 3307
  audio.freeze(5.05);
  stream.send(bytes.subarray(2 * cut + 1)); // starts with its second byte
  await world.clock.settle();
  assert.deepEqual(
    audio.scheduled.map((s) => [s.length, s.sampleRate]),
    [
      [2205, rateHz],
      [2205, rateHz],
      [2205, rateHz],
    ]
  );
  assertBackToBack(audio.scheduled);
  assert.ok(audio.scheduled.every((s) => s.when > s.currentTime), 'never scheduled in the past');
  const played = audio.scheduled.flatMap((s) => s.samples);
  assert.deepEqual(played, values.map((v) => v / 32768), 'every sample, the split one too');
  assert.equal(played[2205 + 1102], -12345 / 32768);
  assert.notEqual(fakeStatus(world, task.task_id), 'succeeded');

  stream.finish();
  await world.clock.advance(30000); // the task succeeds; the audio clock still stands
  assert.equal(result.data.task.status, 'succeeded');
  assert.equal(result.data.playing, 'stream', 'still playing what was scheduled');
  audio.thaw();
  await world.clock.advance(1000);
  assert.equal(result.data.playing, '', 'done once the last buffer has played');
  assert.deepEqual(world.ui.audioPlays, [], 'the stream was whole: the file is not played again');
  assert.equal(world.clock.pendingCount(), 0);
};

scenarios['a base library that cannot stream plays the finished file instead'] = async (world) => {
  world.api.addVoice();
  const page = await world.runtime.openPage(SYNTH);
  for (const lacking of ['request.object.enableChunked', 'createWebAudioContext']) {
    world.settings.unsupported = [lacking];
    const task = await submitText(world, page, `没有 ${lacking} 的基础库`);
    await world.clock.advance(2000);
    const early = world.ui.audioPlays.filter((src) => src.includes(task.task_id));
    assert.deepEqual(early, [], 'nothing before it is done');
    await world.clock.advance(60000);
    const result = taskResult(page);
    assert.equal(result.data.task.status, 'succeeded');
    assert.equal(world.ui.audioPlays[world.ui.audioPlays.length - 1], result.data.task.audio_url);
    assert.equal(result.data.playing, 'result');
    world.ui.audioContexts[0].finish();
  }
  assert.equal(world.ui.audioPlays.length, 2);
  assert.deepEqual(streamCalls(world), [], 'no chunked request');
  assert.deepEqual(world.ui.webAudioContexts, [], 'no WebAudio');
};

scenarios['a stream cut short, or broken, leaves the whole file to play once the task succeeds'] = async (
  world
) => {
  world.api.addVoice();
  world.api.streamMode = 'manual';
  const page = await world.runtime.openPage(SYNTH);
  await submitText(world, page, '一个工作进程中途退出了。');
  const result = taskResult(page);

  // Cut short: a worker died after 0.1 s of audio; the stream ends, the task goes on.
  const [cut] = world.ui.streams;
  cut.sendHeaders();
  cut.send(s16le(tone(2400, 24000)));
  cut.finish();
  await world.clock.advance(1000);
  assert.equal(result.data.playing, '', 'what came has played');
  assert.deepEqual(world.ui.audioPlays, [], 'nothing else until the task has succeeded');
  await world.clock.advance(60000);
  assert.equal(result.data.task.status, 'succeeded');
  assert.ok(0.1 < result.data.task.duration_s - 0.25, 'the file is longer than what the stream brought');
  assert.deepEqual(world.ui.audioPlays, [result.data.task.audio_url], 'the whole file, from the start');
  assert.equal(result.data.playing, 'result');
  world.ui.audioContexts[0].finish();

  // Broken: the network goes mid-stream; and a stream that cannot even start.
  const broken = await submitText(world, page, '网络断了。');
  const stream = world.ui.streams[1];
  stream.sendHeaders();
  stream.send(s16le(tone(4800, 24000)));
  stream.fail('interrupted');
  await world.clock.advance(60000);
  assert.equal(result.data.task.task_id, broken.task_id);
  assert.deepEqual(world.ui.audioPlays.slice(1), [result.data.task.audio_url]);
  world.ui.audioContexts[0].finish();

  world.api.failNext('GET', '/stream$', { networkError: 'timeout' });
  const unreachable = await submitText(world, page, '连不上。');
  await world.clock.advance(60000);
  assert.equal(world.ui.streams[2].state, 'failed');
  assert.equal(result.data.task.task_id, unreachable.task_id);
  assert.deepEqual(world.ui.audioPlays.slice(2), [result.data.task.audio_url]);
  world.ui.audioContexts[0].finish();

  // Refused: the user has too many streams open (elsewhere); the error body is not played.
  world.api.failNext('GET', '/stream$', world.api.error('too_many_streams', 5));
  await submitText(world, page, '流太多了。');
  const refused = world.ui.streams[3];
  refused.sendHeaders();
  await world.clock.settle();
  assert.equal(refused.state, 'aborted', 'no need to read the error body');
  await world.clock.advance(60000);
  assert.deepEqual(world.ui.audioPlays.slice(3), [result.data.task.audio_url]);
  assert.equal(world.ui.webAudioContexts.length, 1, 'one WebAudioContext for every stream of the page');
  assert.equal(world.ui.webAudioContexts[0].scheduled.length, 2, 'what the cut and the broken stream brought');
};

scenarios['A/B, the stop button and hiding the page stop the stream'] = async (world) => {
  const voice = world.api.addVoice();
  world.api.streamMode = 'manual';
  const page = await world.runtime.openPage(SYNTH);
  await submitText(world, page, '第一句。');
  const result = taskResult(page);
  const [audio] = world.ui.webAudioContexts;
  const started = (stream) => {
    stream.sendHeaders();
    stream.send(s16le(tone(24000, 24000)));
  };

  started(world.ui.streams[0]);
  await world.clock.advance(3000);
  assert.equal(result.data.playing, 'stream');
  assert.equal(result.data.sampleUrl, voice.audio_url);
  await world.runtime.trigger(result, 'playSample'); // A, while B still streams
  assert.equal(world.ui.streams[0].state, 'aborted');
  assert.ok(audio.scheduled.every((s) => s.node.stopped), 'what was scheduled is stopped');
  assert.deepEqual(world.ui.audioPlays, [voice.audio_url]);
  assert.equal(result.data.playing, 'sample');
  world.ui.streams[0].send(s16le(tone(2400, 24000)));
  assert.equal(world.ui.streams[0].dropped, 1, 'nothing more is read');
  await world.clock.advance(60000);
  assert.deepEqual(world.ui.audioPlays, [voice.audio_url], 'a tap ends autoplay: no file after');
  world.ui.audioContexts[0].finish();

  await submitText(world, page, '第二句。');
  started(world.ui.streams[1]);
  await world.clock.settle();
  assert.equal(result.data.playing, 'stream');
  await world.runtime.trigger(result, 'stopStream');
  assert.equal(world.ui.streams[1].state, 'aborted');
  assert.equal(result.data.playing, '');

  await submitText(world, page, '第三句。');
  started(world.ui.streams[2]);
  await world.clock.settle();
  await world.runtime.hide(page);
  assert.equal(world.ui.streams[2].state, 'aborted');
  assert.ok(audio.scheduled.every((s) => s.node.stopped));
  assert.equal(result.data.playing, '');
  await world.clock.advance(60000);
  assert.equal(result.data.task.status, 'succeeded');
  assert.deepEqual(world.ui.audioPlays, [voice.audio_url], 'no audio from a hidden page');
  assert.equal(world.clock.pendingCount(), 0);
};

scenarios['a task already finished, or failed, when it is first shown'] = async (world) => {
  world.api.addVoice();
  world.api.taskScript = ['succeeded']; // an identical earlier request: the answer is at hand
  const page = await world.runtime.openPage(SYNTH);
  const done = await submitText(world, page, '早就合成好了。');
  await world.clock.advance(1000);
  const result = taskResult(page);
  assert.equal(result.data.task.task_id, done.task_id);
  assert.deepEqual(streamCalls(world), [], 'nothing to stream: the file plays');
  assert.deepEqual(world.ui.audioPlays, [result.data.task.audio_url]);
  world.ui.audioContexts[0].finish();

  world.api.taskScript = ['failed'];
  await submitText(world, page, '合成失败的一句。');
  await world.clock.advance(60000);
  assert.equal(result.data.task.status, 'failed');
  assert.deepEqual(streamCalls(world), []);
  assert.equal(world.ui.audioPlays.length, 1, 'nothing to play');
};

scenarios['no notify unless the user accepts the subscription'] = async (world) => {
  world.api.addVoice();
  const page = await world.runtime.openPage(SYNTH);
  await typeText(world, page, '你好');
  for (const answer of ['reject', 'fail']) {
    world.settings.subscribeAnswer = answer;
    await world.runtime.trigger(page, 'submit');
  }
  world.config.subscribeTemplateId = '';
  await world.runtime.trigger(page, 'submit');
  assert.equal(world.ui.subscribeRequests.length, 2, 'no template configured: no prompt');
  const posts = callsTo(world, 'POST', '^/v1/syntheses$');
  assert.deepEqual(posts.map((p) => p.data.notify), [false, false, false]);
  assert.deepEqual(posts.map((p) => p.data.mode), ['zero_shot', 'zero_shot', 'zero_shot']);
  assert.ok(posts.every((p) => !('instruct' in p.data)));
};

scenarios['429: the API message, a countdown, and the same key when tried again'] = async (world) => {
  world.api.addVoice();
  const page = await world.runtime.openPage(SYNTH);
  await typeText(world, page, '你好');
  world.api.failNext('POST', '^/v1/syntheses$', world.api.error('rate_limited', 30));
  await world.runtime.trigger(page, 'submit');
  assert.equal(page.data.errorMessage, message(world, 'rate_limited'));
  assert.equal(page.data.cooldownS, 30);
  assert.equal(callsTo(world, 'POST', '^/v1/syntheses$').length, 1, 'a long Retry-After is not waited out');

  await world.clock.advance(30000);
  assert.equal(page.data.cooldownS, 0);
  await world.runtime.trigger(page, 'submit');
  const keys = callsTo(world, 'POST', '^/v1/syntheses$').map((c) => c.header['Idempotency-Key']);
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1], 'the same submission keeps its key');
  assert.ok(page.data.taskId);

  await typeText(world, page, '换一句话');
  await world.runtime.trigger(page, 'submit');
  const third = callsTo(world, 'POST', '^/v1/syntheses$')[2];
  assert.notEqual(third.header['Idempotency-Key'], keys[0], 'a new submission gets a new key');
};

scenarios['503 with a short Retry-After is waited out once, with the same key'] = async (world) => {
  world.api.addVoice();
  const page = await world.runtime.openPage(SYNTH);
  await typeText(world, page, '你好');
  world.api.failNext('POST', '^/v1/syntheses$', world.api.error('overloaded', 2));
  const submitted = world.runtime.trigger(page, 'submit');
  await world.clock.advance(2000);
  await submitted;
  const posts = callsTo(world, 'POST', '^/v1/syntheses$');
  assert.equal(posts.length, 2);
  assert.equal(posts[1].at - posts[0].at, 2000);
  assert.equal(posts[0].header['Idempotency-Key'], posts[1].header['Idempotency-Key']);
  assert.equal(page.data.errorMessage, '');
  assert.ok(page.data.taskId);
};

scenarios['no network, or an error page that is not JSON, still reads clearly'] = async (world) => {
  world.api.failNext('GET', '^/v1/voices$', { networkError: 'timeout' });
  const page = await world.runtime.openPage(SYNTH);
  assert.equal(page.data.errorMessage, '网络超时，请稍后重试');

  world.api.failNext('GET', '^/v1/voices$', proxyError(502, {}));
  await page.onShow();
  await world.clock.settle();
  assert.equal(page.data.errorMessage, '服务暂时不可用，请稍后再试');
};

scenarios['checks before submitting: a voice, some text, not too much'] = async (world) => {
  const page = await world.runtime.openPage(SYNTH);
  assert.equal(page.data.voicesLoaded, true);
  await world.runtime.trigger(page, 'goRecord');
  assert.deepEqual(world.ui.navigations, [{ how: 'switchTab', url: '/pages/record/record' }]);
  await world.runtime.trigger(page, 'submit');
  assert.match(page.data.errorMessage, /录制/);

  world.api.addVoice();
  await page.onShow();
  await world.clock.settle();
  await world.runtime.trigger(page, 'submit');
  assert.equal(page.data.errorMessage, '请输入要合成的文字');
  await typeText(world, page, '好'.repeat(world.fixtures.textMaxChars + 3));
  await world.runtime.trigger(page, 'submit');
  assert.match(page.data.errorMessage, /删减 3 字/);
  assert.equal(callsTo(world, 'POST', '^/v1/syntheses$').length, 0);
  assert.equal(world.ui.subscribeRequests.length, 0, 'no prompt for a request that cannot be sent');

  await world.runtime.trigger(page, 'togglePinyinHelp');
  assert.equal(page.data.showPinyinHelp, true);
  await pickPreset(world, page, 'volume', 'louder');
  await world.runtime.trigger(page, 'clearPreset');
  assert.equal(page.data.presetId, '');
};

scenarios['history: list, play in place, open a task'] = async (world) => {
  const done = world.api.addTask({ text: '早上好' });
  world.api.addTask({ text: '晚安' }, ['failed']);
  const page = await world.runtime.openPage(HISTORY);
  const [list] = callsTo(world, 'GET', '^/v1/syntheses$');
  assert.equal(new URL(list.url).searchParams.get('limit'), String(world.config.historyPageSize));
  assert.deepEqual(page.data.tasks.map((t) => t.statusText), ['合成失败', '已完成']);

  await world.runtime.trigger(page, 'play', { dataset: { id: done.task_id } });
  assert.deepEqual(world.ui.audioPlays, [done.audio_url]);
  await world.runtime.trigger(page, 'open', { dataset: { id: done.task_id } });
  assert.deepEqual(world.ui.navigations, [{ how: 'navigateTo', url: `/pages/task/task?id=${done.task_id}` }]);
  await world.runtime.hide(page);
};

scenarios['history when empty offers to synthesize'] = async (world) => {
  const page = await world.runtime.openPage(HISTORY);
  assert.deepEqual(page.data.tasks, []);
  await world.runtime.trigger(page, 'goSynthesize');
  assert.deepEqual(world.ui.navigations, [{ how: 'switchTab', url: '/pages/synthesize/synthesize' }]);
};

scenarios['signing out asks first, revokes the token, and the next call logs in afresh'] = async (world) => {
  world.api.addTask({ text: '早上好' });
  await world.runtime.launch();
  const page = await world.runtime.openPage(HISTORY);
  const { token } = world.storage.get('voicerelay.session');
  world.settings.modalConfirm = false;
  await world.runtime.trigger(page, 'signOut');
  assert.deepEqual(world.ui.modals, ['退出登录？']);
  assert.equal(callsTo(world, 'DELETE', '^/v1/session$').length, 0, 'cancelled: still signed in');
  assert.equal(world.storage.get('voicerelay.session').token, token);
  assert.equal(page.data.tasks.length, 1);

  world.settings.modalConfirm = true;
  const before = world.calls.length;
  await world.runtime.trigger(page, 'signOut');
  const [revoke, ...others] = world.calls.slice(before);
  assert.deepEqual(others, [], 'one call: no login straight back in');
  assert.equal(`${revoke.method} ${new URL(revoke.url).pathname}`, 'DELETE /v1/session');
  assert.equal(revoke.header.Authorization, `Bearer ${token}`);
  assert.equal(revoke.reply.status, 204);
  assert.equal(world.storage.has('voicerelay.session'), false, 'the stored session is gone');
  assert.equal(world.api.tokens.has(token), false, 'the server revoked it');
  assert.deepEqual(page.data.tasks, []);
  assert.equal(page.data.signedOut, true);
  assert.ok(world.ui.toasts.includes('已退出登录'));
  assert.equal(world.ui.logins, 1);

  await world.runtime.trigger(page, 'signInAgain');
  const [login, list] = world.calls.slice(before + 1);
  assert.equal(world.ui.logins, 2, 'a fresh wx.login');
  assert.equal(`${login.method} ${new URL(login.url).pathname}`, 'POST /v1/session');
  assert.deepEqual(login.data, { code: 'code-2' });
  assert.notEqual(login.reply.body.token, token);
  assert.equal(list.header.Authorization, `Bearer ${login.reply.body.token}`);
  assert.equal(page.data.tasks.length, 1);
  assert.equal(page.data.signedOut, false);
};

scenarios['signing out forgets the token even when the server cannot be told'] = async (world) => {
  await world.runtime.launch();
  const page = await world.runtime.openPage(HISTORY);
  world.api.failNext('DELETE', '^/v1/session$', world.api.error('unauthorized'));
  await world.runtime.trigger(page, 'signOut');
  assert.equal(callsTo(world, 'DELETE', '^/v1/session$').length, 1, 'a 401 is not retried');
  assert.equal(world.ui.logins, 1, 'a 401 does not log in again: the token was already invalid');
  assert.equal(world.storage.has('voicerelay.session'), false);
  assert.equal(page.data.signedOut, true);

  await world.runtime.trigger(page, 'signInAgain');
  world.api.failNext('DELETE', '^/v1/session$', { networkError: 'timeout' });
  await world.runtime.trigger(page, 'signOut');
  assert.equal(callsTo(world, 'DELETE', '^/v1/session$').length, 2);
  assert.equal(world.storage.has('voicerelay.session'), false, 'no network: forgotten locally anyway');
  assert.equal(page.data.errorMessage, '');
  assert.deepEqual(world.ui.toasts, ['已退出登录', '已退出登录']);

  await world.runtime.trigger(page, 'signInAgain');
  world.storage.delete('voicerelay.session'); // WeChat cleared the mini program's storage
  const before = world.calls.length;
  await world.runtime.trigger(page, 'signOut');
  assert.equal(world.calls.length, before, 'no stored token: nothing to revoke');
  assert.equal(page.data.signedOut, true);
  assert.equal(world.ui.logins, 3);
};

scenarios['erasing the account asks first, erases everything and starts afresh'] = async (world) => {
  const voice = world.api.addVoice();
  const done = world.api.addTask({ text: '早上好', voice_id: voice.voice_id });
  await world.runtime.launch();
  const page = await world.runtime.openPage(HISTORY);
  const { token } = world.storage.get('voicerelay.session');
  await world.runtime.trigger(page, 'play', { dataset: { id: done.task_id } });

  const before = world.calls.length;
  await world.runtime.trigger(page, 'eraseAccount');
  assert.deepEqual(world.ui.modals, ['删除全部数据']);
  const [erase, ...others] = world.calls.slice(before);
  assert.deepEqual(others, [], 'one call: the erasure, no login straight back in');
  assert.equal(`${erase.method} ${new URL(erase.url).pathname}`, 'DELETE /v1/me');
  assert.equal(erase.header.Authorization, `Bearer ${token}`);
  assert.equal(erase.reply.status, 204);
  assert.deepEqual(world.ui.loadings, [{ title: '正在删除…', mask: true }]);
  assert.equal(world.ui.loadingShown, false);
  assert.equal(world.storage.has('voicerelay.session'), false, 'the stored session is gone');
  assert.equal(world.api.tokens.has(token), false, 'the server revoked it');
  assert.equal(world.api.voices.size + world.api.tasks.size, 0, 'the server erased everything');
  assert.equal(page.data.playing, '', 'the clip stopped first');
  assert.deepEqual(world.ui.navigations, [{ how: 'reLaunch', url: '/pages/synthesize/synthesize' }]);
  assert.equal(world.ui.toasts[world.ui.toasts.length - 1], '已删除');
  assert.equal(page.data.errorMessage, '');

  // What the reLaunch opens: a fresh wx.login, and an empty account.
  const start = await world.runtime.openPage(SYNTH);
  assert.equal(world.ui.logins, 2);
  assert.deepEqual(start.data.voices, []);
  const [login] = callsTo(world, 'POST', '^/v1/session$').slice(1);
  assert.notEqual(login.reply.body.token, token);
};

scenarios['cancelling the erasure sends nothing and keeps everything'] = async (world) => {
  world.api.addTask({ text: '早上好' });
  await world.runtime.launch();
  const page = await world.runtime.openPage(HISTORY);
  const { token } = world.storage.get('voicerelay.session');
  world.settings.modalConfirm = false;
  const before = world.calls.length;
  await world.runtime.trigger(page, 'eraseAccount');
  assert.deepEqual(world.ui.modals, ['删除全部数据']);
  assert.equal(world.calls.length, before, 'cancelled: nothing sent');
  assert.deepEqual(world.ui.loadings, []);
  assert.deepEqual(world.ui.navigations, []);
  assert.equal(world.storage.get('voicerelay.session').token, token);
  assert.equal(page.data.tasks.length, 1);
  assert.equal(page.data.erasing, false);
};

scenarios['a failed erasure shows the API message and keeps the session to try again'] = async (world) => {
  world.api.addTask({ text: '早上好' });
  await world.runtime.launch();
  const page = await world.runtime.openPage(HISTORY);
  const { token } = world.storage.get('voicerelay.session');
  world.api.failNext('DELETE', '^/v1/me$', world.api.error('unavailable', 30));
  await world.runtime.trigger(page, 'eraseAccount');
  assert.equal(callsTo(world, 'DELETE', '^/v1/me$').length, 1, 'a long Retry-After is not waited out');
  assert.equal(page.data.errorMessage, message(world, 'unavailable'));
  assert.ok(world.ui.toasts.includes(message(world, 'unavailable')));
  assert.equal(world.ui.loadingShown, false);
  assert.equal(page.data.erasing, false);
  assert.deepEqual(world.ui.navigations, [], 'no relaunch: nothing was erased');
  assert.equal(world.storage.get('voicerelay.session').token, token);
  assert.equal(world.api.tasks.size, 1);

  world.api.failNext('DELETE', '^/v1/me$', world.api.error('unavailable', 2));
  const erased = world.runtime.trigger(page, 'eraseAccount');
  await world.clock.advance(2000);
  await erased;
  const erases = callsTo(world, 'DELETE', '^/v1/me$');
  assert.equal(erases.length, 3, 'a short Retry-After is waited out once');
  assert.equal(erases[2].at - erases[1].at, 2000);
  assert.equal(erases[2].reply.status, 204);
  assert.equal(world.storage.has('voicerelay.session'), false);
  assert.deepEqual(world.ui.navigations, [{ how: 'reLaunch', url: '/pages/synthesize/synthesize' }]);
};

scenarios['erasing with a dead or missing token logs in first: a 401 is not proof of erasure'] = async (
  world
) => {
  world.api.addVoice();
  await world.runtime.launch();
  const page = await world.runtime.openPage(HISTORY);
  const { token } = world.storage.get('voicerelay.session');
  world.api.tokens.delete(token); // revoked elsewhere (a high-risk login), still stored here
  await world.runtime.trigger(page, 'eraseAccount');
  const [dead, again] = callsTo(world, 'DELETE', '^/v1/me$');
  assert.equal(dead.reply.status, 401);
  assert.equal(world.ui.logins, 2, 'one fresh wx.login');
  assert.notEqual(again.header.Authorization, `Bearer ${token}`);
  assert.equal(again.reply.status, 204);
  assert.equal(world.api.voices.size, 0, 'the account was erased all the same');
  assert.equal(world.storage.has('voicerelay.session'), false);
  assert.deepEqual(world.ui.navigations, [{ how: 'reLaunch', url: '/pages/synthesize/synthesize' }]);

  world.api.addVoice();
  await world.runtime.trigger(page, 'eraseAccount'); // no stored token now
  const [login, erase] = world.calls.slice(-2);
  assert.equal(`${login.method} ${new URL(login.url).pathname}`, 'POST /v1/session');
  assert.equal(erase.header.Authorization, `Bearer ${login.reply.body.token}`);
  assert.equal(erase.reply.status, 204);
  assert.equal(world.api.voices.size, 0);
};

scenarios['the task page a subscription message opens'] = async (world) => {
  const voice = world.api.addVoice();
  const task = world.api.addTask({ text: '你的合成好了', voice_id: voice.voice_id });
  const page = await world.runtime.openPage(TASK, { id: encodeURIComponent(task.task_id) });
  const result = taskResult(page);
  assert.equal(result.data.task.task_id, task.task_id);
  assert.equal(page.data.text, '你的合成好了', 'the statuschange event reached the page');
  assert.equal(result.data.sampleUrl, voice.audio_url);
  await world.runtime.trigger(page, 'synthesizeAnother');
  await world.runtime.unload(page);
};

scenarios['a failed task shows why; a voice that is gone just disables side A'] = async (world) => {
  const task = world.api.addTask({ text: '失败的一条' }, ['queued', 'failed']);
  const page = await world.runtime.openPage(TASK, { id: task.task_id });
  await world.clock.advance(10000);
  const result = taskResult(page);
  assert.equal(result.data.task.status, 'failed');
  assert.equal(result.data.task.error.message, '合成失败，请稍后再试');
  assert.equal(result.data.sampleUrl, '');
};

scenarios['polling gives up on 404 and offers a retry'] = async (world) => {
  const page = await world.runtime.openPage(TASK, { id: 't_aaaaaaaaaaaaaaaaaaaaaaaaaa' });
  await world.clock.advance(60000);
  const result = taskResult(page);
  assert.equal(callsTo(world, 'GET', '^/v1/syntheses/').length, 1, 'a 404 is not polled again');
  assert.equal(result.data.errorMessage, message(world, 'not_found'));
  assert.equal(result.data.canRetry, true);
  await world.runtime.trigger(result, 'retry');
  assert.equal(callsTo(world, 'GET', '^/v1/syntheses/').length, 2);
};

scenarios['polling keeps going through server trouble and honours Retry-After'] = async (world) => {
  const task = world.api.addTask({ text: '稍等' }, ['queued', 'queued', 'succeeded']);
  world.api.failNext('GET', '^/v1/syntheses/t_', world.api.error('internal'));
  world.api.failNext('GET', '^/v1/syntheses/t_', proxyError(503, { 'Retry-After': '6' }));
  const page = await world.runtime.openPage(TASK, { id: task.task_id });
  const result = taskResult(page);
  assert.equal(result.data.errorMessage, message(world, 'internal'));
  await world.clock.advance(60000);
  const polls = callsTo(world, 'GET', '^/v1/syntheses/t_');
  assert.deepEqual(gaps(polls).slice(0, 2), [1000, 6000], 'Retry-After beats the 2 s backoff');
  assert.equal(result.data.task.status, 'succeeded');
  assert.equal(result.data.errorMessage, '');
};

scenarios['leaving the page stops polling and audio'] = async (world) => {
  world.api.addVoice();
  const page = await world.runtime.openPage(SYNTH);
  await typeText(world, page, '你好');
  await world.runtime.trigger(page, 'submit');
  await world.clock.advance(1000);
  const before = world.calls.length;
  await world.runtime.hide(page);
  await world.runtime.unload(page);
  await world.clock.advance(120000);
  assert.equal(world.calls.length, before, 'no calls after the page is gone');
  assert.equal(world.clock.pendingCount(), 0, 'no timers left behind');
  assert.ok(world.ui.audioContexts.every((c) => c.destroyed));
  assert.deepEqual(world.ui.streams.map((s) => s.state), ['aborted'], 'the stream is closed');
  assert.ok(world.ui.webAudioContexts.every((c) => c.state === 'closed'));
  assert.ok(world.ui.webAudioContexts[0].scheduled.length > 0, 'it had started playing');
};

module.exports = { scenarios };
