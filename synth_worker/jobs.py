"""One synthesis job, from a `tts.synthesis.requested` event to stored audio and a final event.

Order matters for "nothing lost": store the audio, record the final state, publish the event,
and only then ack. A crash anywhere before the ack means redelivery, and every step is idempotent
(the output key is derived from the task id; event ids dedupe on the stream).

What that order does not constrain runs side by side, so that a job adds little to the engine's
time: the task is marked running and its `started` event published while the voice's sample is
looked up and the engine speaks, and the voice's record is checked (`_erase_if_deleted`) while the
audio is labelled and encoded. A voice's decoded sample stays in memory (synth_worker/prompts.py):
its later tasks read nothing from S3. The speaker similarity of the output, a quality signal, is
measured after the job, once the worker is idle (synth_worker/idle.py), into the metric and the log.
The completed event says where the job's time went (`timings_ms`, milliseconds).

How a job ends: success (ack); a poison job, one that can never succeed, fails the task with a reason
(term); a transient failure (S3 down, the engine busy) hands the job back with a growing delay (nak),
and the last delivery fails the task instead. A job whose deliveries ran out while no worker could
fail it (a worker killed on its last try) comes back as a dead letter, and `dead_letter` fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

import nats.errors
import numpy as np
from nats.aio.msg import Msg

from common.audio import CONTENT_TYPES, AudioError, Pcm, decode_audio
from common.logs import log_context
from common.owners import owned_key
from common.vocabulary import AIGC_LABELS
from events import names
from events.audio import AudioPublisher, purge_audio
from events.bus import EventBus, consumer_spec
from events.consumer import DeadLetter
from events.envelope import Envelope
from events.names import EventType
from events.records import VOICE_DELETED, ErrorInfo, TaskRecord, TaskStatus
from events.retry import RetryPolicy
from events.sealing import ERASED, open_field
from events.state import SharedState
from events.task_events import completed_event, failed_event, started_event, task_event
from storage.keys import features_prefix, output_key
from storage.objects import ObjectNotFound, ObjectStore, StorageError
from synth_worker.engines.base import Engine, SynthesisRequest, adapts_to_speaker, forgets_voices
from synth_worker.engines.errors import EngineInputError, ProfileRejected
from synth_worker.idle import DropReason, IdleItem, IdleQueue
from synth_worker.metrics import WorkerMetrics
from synth_worker.output_file import FileEncoding, OutputFile
from synth_worker.prompts import PromptCache, PromptKey, is_sha256
from synth_worker.speaker.embedding import SpeakerEncoder, cosine
from synth_worker.speaker.profiles import Profile, ProfileCache, ProfileKey, ProfileSource
from synth_worker.streaming import Spoken, stream_speech

log = logging.getLogger(__name__)

# Transient failures are retried after 1, 2, 4, 8, 8, … s (delivery 1, 2, 3, …). With the worker
# consumer's 10 deliveries that spans about a minute: an S3 restart or a busy engine is ridden out, and
# once the cause is gone a job waits at most 8 s for its next try. The last delivery fails the task.
RETRY = RetryPolicy(
    first_delay_s=1.0, max_delay_s=8.0, give_up_after=consumer_spec(names.WORKER_CONSUMER).max_deliver
)

SYNTHESIS_FAILED = ErrorInfo("synthesis_failed", "语音合成失败，请换一段文字再试")
VOICE_GONE = VOICE_DELETED
GAVE_UP = ErrorInfo("synthesis_failed", "语音合成暂时失败，请稍后重试")
# The sample's speaker embedding is cached like an engine's profile; bump the version when the way
# it is computed changes (encoder, resampling, padding), so old embeddings are not compared with new.
EMBEDDING_ANALYSIS, EMBEDDING_VERSION = "resemblyzer", "1"
# The similarity of a finished task is measured once no job has run for this long (synth_worker/idle.py),
# at most this many tasks (and bytes of their audio) waiting; past that the oldest go unmeasured.
SIMILARITY_SETTLE_S = 0.25
SIMILARITY_MAX_PENDING = 16
SIMILARITY_MAX_BYTES = 64 * 1024 * 1024
# How long a measurement running at shutdown may take to finish.
SIMILARITY_CLOSE_GRACE_S = 5.0


class UserErased(Exception):
    """The job's owner erased their data (DELETE /v1/me) while it waited or ran: nothing is left to do."""


@dataclass(frozen=True, slots=True)
class Rendered:
    audio: bytes
    duration_s: float  # of the stored file: the speech and its audible AIGC label
    synthesis_s: float
    speech: Pcm  # the engine's speech, before the label and encoding: what similarity is measured on
    aigc_label: str = AIGC_LABELS[0]  # the audible label the file carries (common.vocabulary)
    label_tail: Pcm | None = None  # what the file has after the speech: a pause and the audible label
    first_audio_s: float | None = None  # the engine's time to its first piece of speech
    speaker_profile: ProfileSource | None = None  # where the engine's speaker profile came from


@dataclass(frozen=True, slots=True)
class VoiceSample:
    """The voice a job speaks with: its decoded sample and what identifies that sample."""

    owner: str
    voice_id: str
    audio_sha256: str  # of the stored sample's bytes, the very bytes that were decoded
    prompt: Pcm

    def profile_key(self, analysis: str, version: str) -> ProfileKey:
        return ProfileKey(self.owner, self.voice_id, self.audio_sha256, analysis, version)


def read_sample(sample: bytes) -> tuple[Pcm, str]:
    """The decoded sample and its sha256 (blocking: runs in the engine's executor)."""
    return decode_audio(sample), hashlib.sha256(sample).hexdigest()


def render(
    speech: Pcm,
    synthesis_s: float,
    audio_format: str,
    task_id: str,
    *,
    aigc_label: str = AIGC_LABELS[0],
    aigc_producer: str = "VoiceRelay",
) -> Rendered:
    """Label and encode the engine's speech, all at once (blocking): the file a job makes of it.

    China's labelling rules (synth_worker/labels.py): the audible label `aigc_label` follows the
    speech (the stream sends the same tail), and the implicit one (GB 45438-2025 Annex E, the task id
    as ProduceID) goes into the file's metadata.
    """
    output = OutputFile(audio_format, aigc_label, task_id=task_id, producer=aigc_producer)
    made = output.finish(speech)
    return Rendered(made.audio, made.duration_s, synthesis_s, speech, aigc_label, made.tail)


def retry_delay_s(num_delivered: int) -> float:
    """How long a transiently failed job waits before its next delivery: doubling, capped."""
    return RETRY.delay_s(num_delivered)


class JobClock:
    """Where one job's time went: the completed event's `timings_ms`, in milliseconds.

    `queue`: from the request event's time to the job's start (two hosts' clocks: approximate).
    `fetch_prompt`: the voice's decoded sample, from memory or S3. `profile`: the engine's speaker
    profile. `first_audio`: from the job's start to its first piece of speech on the audio stream.
    `synthesis`: the engine (`synthesis_s`). `encode`: the label and the file. `store`: S3.
    `record`: the task's final state in KV. `total`: from the job's start to its completed event.
    """

    ORDER = ("queue", "fetch_prompt", "profile", "first_audio", "synthesis", "encode", "store", "record")

    def __init__(self, requested_at: str) -> None:
        self._started = time.perf_counter()
        self._ms: dict[str, float] = {}
        queue_ms = _ms_since(requested_at)
        if queue_ms is not None:
            self._ms["queue"] = queue_ms

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self._started) * 1000, 1)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._ms[name] = round((time.perf_counter() - started) * 1000, 1)

    def mark(self, name: str) -> None:
        """The time since the job's start, the first time only."""
        self._ms.setdefault(name, self.elapsed_ms())

    def timings_ms(self, synthesis_s: float) -> dict[str, float]:
        ms = self._ms | {"synthesis": round(synthesis_s * 1000, 1)}
        return {name: ms[name] for name in self.ORDER if name in ms} | {"total": self.elapsed_ms()}


def _ms_since(iso_time: str) -> float | None:
    try:
        then_s = datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None
    return round(max(0.0, time.time() - then_s) * 1000, 1)


@dataclass(frozen=True, slots=True)
class _Made:
    """What a synthesis left for the rest of its job."""

    rendered: Rendered
    voice: VoiceSample
    voice_alive: bool  # the voice's record was there after the job stored what it made of it


@contextlib.asynccontextmanager
async def heartbeat(msg: Msg, every_s: float) -> AsyncIterator[None]:
    """Tell JetStream the job is alive while it runs, so a long synthesis is not redelivered."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await msg.in_progress()
            except nats.errors.Error as exc:
                # NATS is reconnecting; the job goes on. A beat or two late only risks a redelivery,
                # which the task id makes harmless.
                log.warning("heartbeat for %s not sent: %s", msg.subject, exc)

    beating = asyncio.create_task(beat(), name="heartbeat")
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


class JobRunner:
    """The consumer handler of the worker; one job at a time per engine."""

    def __init__(
        self,
        *,
        bus: EventBus,
        state: SharedState,
        store: ObjectStore,
        engine: Engine,
        executor: Executor,
        metrics: WorkerMetrics,
        encode_executor: Executor | None = None,
        heartbeat_s: float | None = None,
        speaker_encoder: SpeakerEncoder | None = None,
        profiles: ProfileCache | None = None,
        prompts: PromptCache | None = None,
        aigc_label: str = AIGC_LABELS[0],
        aigc_producer: str = "VoiceRelay",
        similarity_settle_s: float = SIMILARITY_SETTLE_S,
    ) -> None:
        """`encode_executor`: where the file is encoded while the engine speaks (one thread of its
        own; None: the engine's `executor`, so the encoding waits for the engine's last piece).
        `speaker_encoder` None: no speaker similarity. `profiles` None: a cache of this runner's
        own (per-voice analyses of adaptive engines and of the encoder); `prompts` likewise (decoded
        samples). `aigc_label`, `aigc_producer`: AIGC_EXPLICIT_LABEL and AIGC_PRODUCER
        (synth_worker/labels.py). `similarity_settle_s`: how long the worker must have been idle
        before a finished task's similarity is measured (0: right after the job).

        A runner with an encoder owns background work: `close()` it when done (`settle()` runs what
        is pending now)."""
        if aigc_label not in AIGC_LABELS:
            raise ValueError(f"aigc_label must be one of {AIGC_LABELS}, got {aigc_label!r}")
        self._aigc_label, self._aigc_producer = aigc_label, aigc_producer
        self._bus, self._state, self._store = bus, state, store
        self._engine, self._executor, self._metrics = engine, executor, metrics
        self._encode_executor = executor if encode_executor is None else encode_executor
        self._adaptive = adapts_to_speaker(engine)
        self._forgets = forgets_voices(engine)
        self._encoder = speaker_encoder
        self._profiles = profiles if profiles is not None else ProfileCache(store, executor)
        self._prompts = prompts if prompts is not None else PromptCache()
        self._idle = IdleQueue(
            settle_s=similarity_settle_s,
            max_pending=SIMILARITY_MAX_PENDING,
            max_bytes=SIMILARITY_MAX_BYTES,
            on_dropped=self._similarity_dropped,
        )
        spec = consumer_spec(names.WORKER_CONSUMER)
        # Three beats per ack_wait: one lost beat never costs the job.
        self._heartbeat_s = spec.ack_wait_s / 3 if heartbeat_s is None else heartbeat_s
        self._retry = RETRY

    @property
    def profiles(self) -> ProfileCache:
        """The speaker profiles this runner keeps in memory (tests look into it)."""
        return self._profiles

    @property
    def prompts(self) -> PromptCache:
        """The decoded samples this runner keeps in memory (tests look into it)."""
        return self._prompts

    async def settle(self) -> None:
        """Measure every finished task's similarity still pending, now, and wait for it."""
        await self._idle.settle()

    async def close(self, grace_s: float = SIMILARITY_CLOSE_GRACE_S) -> None:
        """Stop the background work: the measurement running finishes (up to `grace_s`), the pending
        ones are dropped. Before the bus, the store and the executor close."""
        await self._idle.close(grace_s)

    async def __call__(self, event: Envelope, msg: Msg) -> None:
        with log_context(trace_id=event.trace_id, task_id=event.task_id), self._idle.busy():
            await self._run(event, msg, JobClock(event.time))

    async def _run(self, event: Envelope, msg: Msg, clock: JobClock) -> None:
        owner, task_id = event.openid, event.task_id or ""
        task = await self._state.tasks.get(owner, task_id)
        if task is None:
            log.warning("task %s not found; dropping its job", task_id)
            await msg.ack()
            return
        if task.status == TaskStatus.SUCCEEDED:  # redelivered after success: make sure the event exists
            await self._publish_completed(task)
            await msg.ack()
            return
        if task.status.is_final:
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered
        log.info("task %s running (attempt %d, trace %s)", task_id, attempt, task.trace_id)
        # Running and announced while the job goes on: nothing below depends on it, and it is done
        # before the job's outcome is recorded (a failure of its own hands the job back).
        start = asyncio.create_task(self._start(task, attempt), name="start")
        chunks = AudioPublisher(self._bus.js, owner, task_id, attempt)
        try:
            async with heartbeat(msg, self._heartbeat_s):
                made = await self._synthesise(task, event, chunks, clock)
                key = output_key(owner, task_id, task.format)
                with clock.stage("store"):
                    await self._store.put(key, made.rendered.audio, CONTENT_TYPES[task.format])
        except asyncio.CancelledError:
            start.cancel()
            raise
        except Exception as exc:
            await start
            await self._failed(task, exc, msg)
            return
        await start
        rendered = made.rendered
        with clock.stage("record"):
            done = await self._state.tasks.transition(
                owner,
                task_id,
                TaskStatus.SUCCEEDED,
                audio_key=key,
                duration_s=round(rendered.duration_s, 3),
                aigc_label=rendered.aigc_label,
                error=None,
            )
        if done is None:
            await self._discard_output_of_erased(task, key, msg)
            return
        if done.status == TaskStatus.SUCCEEDED:
            self._metrics.task_transitions.labels(TaskStatus.SUCCEEDED).inc()
            await self._publish_completed(done, rendered, clock.timings_ms(rendered.synthesis_s))
        # A listener's audio ends here: whoever heard it all finds the task succeeded and announced.
        await chunks.end(rendered.speech.sample_rate_hz)
        speech_s = rendered.speech.duration_s  # the engine's work, without the label
        self._metrics.observe(self._engine.name, rendered.synthesis_s, speech_s, "succeeded")
        log.info(
            "task %s succeeded: %.2f s audio in %.2f s, profile %s, %.0f ms in all",
            task_id,
            speech_s,
            rendered.synthesis_s,
            rendered.speaker_profile,
            clock.elapsed_ms(),
        )
        await msg.ack()
        if done.status == TaskStatus.SUCCEEDED and made.voice_alive:
            self._measure_later(done, made.voice, rendered.speech)

    async def _start(self, task: TaskRecord, attempt: int) -> None:
        await self._state.tasks.transition(task.owner, task.task_id, TaskStatus.RUNNING)
        self._metrics.task_transitions.labels(TaskStatus.RUNNING).inc()
        await self._bus.publish(started_event(task, attempt=attempt, engine=self._engine.name))

    async def _failed(self, task: TaskRecord, exc: Exception, msg: Msg) -> None:
        """End a job whose synthesis or upload raised `exc`: fail it, or hand it back."""
        if isinstance(exc, ObjectNotFound | UserErased):
            # A redelivered job of a voice deleted during an earlier try may find what that try wrote.
            # An erased user's task is gone too: failing it finds nothing and the job ends.
            await self._erase_if_deleted(task.owner, task.voice_id)
            await self._fail(task, VOICE_GONE, msg)
            return
        if isinstance(exc, AudioError | EngineInputError):
            log.warning("task %s cannot be synthesised: %s", task.task_id, exc)
            await self._fail(task, SYNTHESIS_FAILED, msg)
            return
        # Transient (S3 down, an engine hiccup): hand the job back with a delay. On the last
        # delivery the task fails with a reason, so it is never left "running" forever.
        if self._retry.gives_up(msg.metadata.num_delivered):
            log.error("task %s failed on its last delivery", task.task_id, exc_info=exc)
            await self._fail(task, GAVE_UP, msg)
            return
        delay_s = self._retry.delay_s(msg.metadata.num_delivered)
        log.warning("task %s: %s; retrying in %.0f s", task.task_id, exc, delay_s)
        await msg.nak(delay=delay_s)

    async def dead_letter(self, letter: DeadLetter, msg: Msg) -> None:
        """A job the worker consumer gave up on: fail its task unless it finished, and say so.

        Several workers may see one dead letter (a redelivery, a crash half-way): the task moves by
        compare-and-set and the events have fixed ids, so doing it twice changes nothing.
        """
        event = letter.event
        owner, task_id = event.openid, event.task_id or ""
        task = await self._state.tasks.get(owner, task_id)
        if task is None or task.status == TaskStatus.REJECTED:
            await msg.ack()
            return
        if task.status == TaskStatus.SUCCEEDED:  # died between success and ack: make sure it is told
            await self._publish_completed(task)
            await msg.ack()
            return
        failed = await self._state.tasks.fail(owner, task_id, GAVE_UP)
        if failed is not None and failed.status == TaskStatus.FAILED:
            self._metrics.task_transitions.labels(TaskStatus.FAILED).inc()
            await self._bus.publish(failed_event(failed, failed.error or GAVE_UP))
            where = {"stream": letter.stream, "stream_seq": letter.stream_seq, "consumer": letter.consumer}
            data = {"original_event_id": event.id, "deliveries": letter.deliveries, **where}
            await self._bus.publish(task_event(failed, EventType.SYNTHESIS_DEADLETTERED, "deadletter", data))
            self._metrics.tasks.labels("deadlettered").inc()
            log.warning(
                "task %s dead-lettered after %d deliveries (event %s)", task_id, letter.deliveries, event.id
            )
        await msg.ack()

    async def _discard_output_of_erased(self, task: TaskRecord, key: str, msg: Msg) -> None:
        """The task vanished while its audio was made: its owner erased their data (DELETE /v1/me),
        whose sweep of S3 may have run before this put. The audio goes too, and the job ends."""
        try:
            await self._store.delete(key)
        except StorageError as exc:  # the S3 lifecycle rule expires it
            log.error("audio of erased task %s not deleted: %s", task.task_id, exc)
        try:
            await purge_audio(self._bus.js, task.owner, task.task_id)
        except (nats.errors.Error, TimeoutError) as exc:  # the audio stream expires them in minutes
            log.error("audio chunks of erased task %s not purged: %r", task.task_id, exc)
        log.info("task %s vanished while it ran (its user's data was erased); audio discarded", task.task_id)
        await msg.ack()

    async def _synthesise(
        self, task: TaskRecord, event: Envelope, chunks: AudioPublisher, clock: JobClock
    ) -> _Made:
        voice, prompt_text = await self._prepare(task, event, clock)
        request = SynthesisRequest(
            text=task.text,
            mode=task.mode,
            prompt=voice.prompt,
            prompt_text=prompt_text,
            speaker_key=f"{task.owner}.{voice.audio_sha256}",
            instruct=task.instruct,
            speed=task.speed,
            voice_key=owned_key(task.owner, task.voice_id),
        )
        try:
            rendered, voice_alive = await self._speak(task, voice, request, chunks, clock)
        except Exception:
            await self._erase_if_deleted(task.owner, task.voice_id)
            raise
        return _Made(rendered, voice, voice_alive)

    async def _prepare(self, task: TaskRecord, event: Envelope, clock: JobClock) -> tuple[VoiceSample, str]:
        """The voice's decoded sample and its transcript, opened with the owner's key.

        From memory when the request names the sample's sha256 and this process decoded it before;
        then the voice's record stands in for the sample's existence (a deleted voice fails the job as
        a missing sample would). Else from S3, decoded on the executor, and kept for the next task.
        Raises ObjectNotFound (the voice is gone), UserErased, AudioError.
        """
        data, owner = event.data, task.owner
        sample_key = str(data["sample_key"])
        claimed = data.get("audio_sha256")
        key = PromptKey(owner, task.voice_id, sample_key, claimed) if is_sha256(claimed) else None
        with clock.stage("fetch_prompt"):
            kept = None if key is None else self._prompts.get(key)
            if kept is not None:
                record, user_key = await asyncio.gather(
                    self._state.voices.get(owner, task.voice_id), self._state.user_keys.find(owner)
                )
                if record is None:
                    raise ObjectNotFound(f"voice {task.voice_id} is gone")
                self._metrics.voice_sample_lookups.labels("memory").inc()
                prompt_text = self._open_prompt_text(user_key, owner, data)
                return VoiceSample(owner, task.voice_id, str(claimed), kept), prompt_text
            sample, user_key = await asyncio.gather(
                self._store.get(sample_key), self._state.user_keys.find(owner)
            )
            self._metrics.voice_sample_lookups.labels("stored").inc()
            prompt_text = self._open_prompt_text(user_key, owner, data)
            loop = asyncio.get_running_loop()
            prompt, audio_sha256 = await loop.run_in_executor(self._executor, read_sample, sample)
        if key is not None and audio_sha256 != claimed:
            log.warning("sample of voice %s does not match its record's sha256", task.voice_id)
        # Kept before the job's check of the voice's record (`_erase_if_deleted`), which forgets it
        # if the voice went meanwhile; a voice already forgotten is not taken back.
        self._prompts.put(PromptKey(owner, task.voice_id, sample_key, audio_sha256), prompt)
        return VoiceSample(owner, task.voice_id, audio_sha256, prompt), prompt_text

    @staticmethod
    def _open_prompt_text(user_key: bytes | None, owner: str, data: dict[str, object]) -> str:
        # Sealed with the owner's key (events/sealing.py); without the key the owner was erased.
        prompt_text = open_field(user_key, owner, "prompt_text", data.get("prompt_text", ""))
        if prompt_text == ERASED:
            raise UserErased(owner)
        return str(prompt_text)

    async def _speak(
        self,
        task: TaskRecord,
        voice: VoiceSample,
        request: SynthesisRequest,
        chunks: AudioPublisher,
        clock: JobClock,
    ) -> tuple[Rendered, bool]:
        """The engine's rendering with the voice's profile, labelled and encoded; and whether the
        voice's record was still there once the job had stored what it made of the voice."""
        if self._adaptive is None:
            profile = None
        else:
            with clock.stage("profile"):
                profile = await self._speaker_profile(voice)
        try:
            rendered, voice_alive = await self._speak_into_file(task, request, profile, chunks, clock)
        except ProfileRejected as exc:
            if profile is None or profile.source == "computed":
                raise  # the engine refuses its own fresh analysis: a poison job
            # A damaged or outdated cache entry must not poison the voice: analyse it once more.
            log.warning(
                "cached speaker profile of voice %s refused (%s); analysing again", task.voice_id, exc
            )
            await self._profiles.discard(self._profile_key(voice))
            profile = await self._speaker_profile(voice)
            rendered, voice_alive = await self._speak_into_file(task, request, profile, chunks, clock)
        return dataclasses.replace(
            rendered, speaker_profile=None if profile is None else profile.source
        ), voice_alive

    async def _speak_into_file(
        self,
        task: TaskRecord,
        request: SynthesisRequest,
        profile: Profile | None,
        chunks: AudioPublisher,
        clock: JobClock,
    ) -> tuple[Rendered, bool]:
        """The engine's speech, published as it comes and encoded into the task's file meanwhile
        (synth_worker/output_file.py), then labelled; and whether the voice's record was still there."""
        output = OutputFile(task.format, self._aigc_label, task_id=task.task_id, producer=self._aigc_producer)
        async with FileEncoding(output, self._encode_executor) as file:
            spoken = await self._stream(request, profile, chunks, clock, file)
            # Everything the job keeps of the voice is stored by now: check its record while encoding.
            checking = asyncio.create_task(
                self._erase_if_deleted(task.owner, task.voice_id), name="voice-check"
            )
            try:
                rendered = await self._label_and_encode(spoken, chunks, clock, file)
            except BaseException:
                checking.cancel()  # a failed job checks again (`_synthesise`)
                raise
            return rendered, await checking

    async def _stream(
        self,
        request: SynthesisRequest,
        profile: Profile | None,
        chunks: AudioPublisher,
        clock: JobClock,
        file: FileEncoding,
    ) -> Spoken:
        """Synthesise as a stream, each piece published on `chunks` (events/audio.py) and handed to
        the file's encoder as it comes."""
        with_profile = dataclasses.replace(request, speaker_profile=None if profile is None else profile.data)

        async def publish(piece: Pcm) -> None:
            file.add(piece)
            await chunks.publish(piece)
            clock.mark("first_audio")

        return await stream_speech(self._engine, with_profile, self._executor, publish)

    async def _label_and_encode(
        self, spoken: Spoken, chunks: AudioPublisher, clock: JobClock, file: FileEncoding
    ) -> Rendered:
        """The file finished, and the label's tail published for listeners: a client streaming the
        task hears what the stored file holds. The end marker follows once the task has succeeded
        (`_run`)."""
        speech = spoken.speech
        with clock.stage("encode"):
            made = await file.finish(speech)
            if made.tail is not None:
                await chunks.publish(made.tail)
        return Rendered(
            made.audio,
            made.duration_s,
            spoken.synthesis_s,
            speech,
            self._aigc_label,
            made.tail,
            first_audio_s=spoken.first_piece_s,
        )

    async def voice_deleted(self, owner: str, voice_id: str) -> None:
        """A `tts.voice.deleted` heard (every worker hears it): forget what this process keeps of the
        voice, its profiles and decoded samples in memory, its tasks' pending similarity
        measurements and the engine's registered speakers.

        The gateway deletes the voice's features prefix, then its record, then publishes this. A job
        here may have stored a profile between the first two and read the record before the second
        (so `_erase_if_deleted` saw the voice alive): when this process held profiles of the voice,
        it deletes the prefix once more. Raises if the engine cannot forget: the worker then exits
        and is restarted with nothing in memory.
        """
        held, samples = self._forget_in_memory(owner, voice_id)
        speakers = await self._forget_engine_voice(owner, voice_id)
        erased = 0
        if held:
            try:
                erased = await self._store.delete_prefix(features_prefix(owner, voice_id))
            except StorageError as exc:  # the gateway's delete and the S3 lifecycle rule remain
                log.error("features of deleted voice %s not swept: %s", voice_id, exc)
        log.info(
            "voice %s deleted: forgot %d profiles, %d samples and %d engine speakers, swept %d stored "
            "objects",
            voice_id,
            held,
            samples,
            speakers,
            erased,
        )

    def _forget_in_memory(self, owner: str, voice_id: str) -> tuple[int, int]:
        """Drop the voice from memory: (profiles, decoded samples) there were. Its tasks' pending
        similarity measurements go too (they hold its sample)."""
        self._idle.forget_voice(owner, voice_id)
        return self._profiles.forget_voice(owner, voice_id), self._prompts.forget_voice(owner, voice_id)

    async def _forget_engine_voice(self, owner: str, voice_id: str) -> int:
        if self._forgets is None:
            return 0
        forget = self._forgets.forget_voice
        return await asyncio.get_running_loop().run_in_executor(self._executor, forget, owner, voice_id)

    async def _erase_if_deleted(self, owner: str, voice_id: str) -> bool:
        """After a job used the voice: if its record is gone, erase what the job may have left.
        Whether the voice is still there (True when its record could not be read).

        Write, then check: the job stores its profiles and its decoded sample (and registers its
        speaker) before this reads the voice's record, so a deletion is caught by one side or the
        other. Removed before this read: erased here (memory, the engine, the features prefix).
        Removed after it: the deletion's own `tts.voice.deleted` comes later still, and
        `voice_deleted` empties memory and sweeps the prefix again. Never raises: the job's outcome
        stands.
        """
        try:
            if await self._state.voices.get(owner, voice_id) is not None:
                return True
        except Exception:
            log.exception("voice %s not read; what its job made of it may outlive a deletion", voice_id)
            return True
        held, samples = self._forget_in_memory(owner, voice_id)
        try:
            speakers = await self._forget_engine_voice(owner, voice_id)
            erased = await self._store.delete_prefix(features_prefix(owner, voice_id))
        except Exception:
            log.exception("voice %s is gone; what its job made of it may not be erased", voice_id)
            return False
        if held or samples or speakers or erased:
            log.info(
                "voice %s was deleted during its job: forgot %d profiles, %d samples and %d engine "
                "speakers, erased %d stored objects",
                voice_id,
                held,
                samples,
                speakers,
                erased,
            )
        return False

    def _profile_key(self, voice: VoiceSample) -> ProfileKey:
        assert self._adaptive is not None
        return voice.profile_key(self._engine.name, self._adaptive.profile_version)

    async def _speaker_profile(self, voice: VoiceSample) -> Profile | None:
        """The adaptive engine's analysis of the voice, once per voice (None: the engine does not adapt)."""
        if self._adaptive is None:
            return None
        key = self._profile_key(voice)
        profile = await self._profiles.get_or_analyse(key, voice.prompt, self._adaptive.analyse_speaker)
        self._metrics.observe_profile(self._engine.name, profile)
        return profile

    def _measure_later(self, task: TaskRecord, voice: VoiceSample, speech: Pcm) -> None:
        """Queue the speaker similarity of a succeeded task, measured once the worker is idle."""
        if self._encoder is None:
            return

        async def measure() -> None:
            with log_context(trace_id=task.trace_id, task_id=task.task_id):
                if self._prompts.is_forgotten(voice.owner, voice.voice_id):  # deleted since
                    self._metrics.speaker_similarity_skipped.labels(self._engine.name, "voice_deleted").inc()
                    return
                similarity = await self._speaker_similarity(voice, speech)
                if similarity is not None:
                    log.info("task %s speaker similarity %.3f", task.task_id, similarity)

        self._idle.submit(IdleItem(voice.owner, voice.voice_id, speech.samples.nbytes, measure))

    def _similarity_dropped(self, item: IdleItem, reason: DropReason) -> None:
        self._metrics.speaker_similarity_skipped.labels(self._engine.name, reason).inc()

    async def _speaker_similarity(self, voice: VoiceSample, speech: Pcm) -> float | None:
        """Cosine of the output's and the sample's speaker embeddings, rounded to 3 places, into the
        `voicerelay_speaker_similarity` histogram.

        None without an encoder. The signal is for tracking quality only, so its failure is logged and
        never fails the task (the audio is good; retrying would redo the synthesis for nothing). The
        sample's embedding is stored like a profile: write, then check (`_erase_if_deleted`).
        """
        encoder = self._encoder
        if encoder is None:
            return None
        try:
            key = voice.profile_key(EMBEDDING_ANALYSIS, EMBEDDING_VERSION)
            reference = await self._profiles.get_or_analyse(
                key, voice.prompt, lambda pcm: encoder.embed(pcm).tobytes()
            )
            self._metrics.observe_profile(EMBEDDING_ANALYSIS, reference)
            if reference.source != "memory" and not await self._erase_if_deleted(voice.owner, voice.voice_id):
                return None
            output = await asyncio.get_running_loop().run_in_executor(self._executor, encoder.embed, speech)
            similarity = round(cosine(np.frombuffer(reference.data, dtype=np.float32), output), 3)
        except Exception:
            log.exception("speaker similarity not measured")
            return None
        self._metrics.speaker_similarity.labels(self._engine.name).observe(similarity)
        return similarity

    async def _publish_completed(
        self, task: TaskRecord, rendered: Rendered | None = None, timings_ms: dict[str, float] | None = None
    ) -> None:
        data: dict[str, object] = {
            "audio_key": task.audio_key,
            "format": task.format,
            "duration_s": task.duration_s,
            "engine": self._engine.name,
            "engine_version": self._engine.version,
        }
        if rendered is not None:
            data |= {
                "synthesis_s": round(rendered.synthesis_s, 4),
                "real_time_factor": round(rendered.synthesis_s / max(rendered.speech.duration_s, 1e-6), 4),
            }
            if rendered.first_audio_s is not None:
                data["first_audio_s"] = round(rendered.first_audio_s, 4)
            if rendered.speaker_profile is not None:
                data["speaker_profile"] = rendered.speaker_profile
        if timings_ms is not None:
            data["timings_ms"] = timings_ms
        await self._bus.publish(completed_event(task, data))

    async def _fail(self, task: TaskRecord, error: ErrorInfo, msg: Msg) -> None:
        """A poison job: it can never succeed, so it ends as failed with a reason instead of looping."""
        failed = await self._state.tasks.fail(task.owner, task.task_id, error)
        if failed is not None and failed.status == TaskStatus.FAILED:
            self._metrics.task_transitions.labels(TaskStatus.FAILED).inc()
            await self._bus.publish(failed_event(failed, error))
        self._metrics.tasks.labels("failed").inc()
        log.info("task %s failed: %s", task.task_id, error.code)
        await msg.term()
