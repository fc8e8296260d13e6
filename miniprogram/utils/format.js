/** What the pages show for API values: status words, times, character counts. */

const TASK_STATUS_TEXT = {
  queued: '排队中',
  awaiting_review: '声音审核中',
  running: '合成中',
  succeeded: '已完成',
  failed: '合成失败',
  rejected: '未通过审核',
};
const FINAL_TASK_STATUSES = ['succeeded', 'failed', 'rejected'];
// The stages a task moves through, for a step indicator (there is no finer progress to show).
const TASK_STAGE = { queued: 1, awaiting_review: 1, running: 2, succeeded: 3, failed: 3, rejected: 3 };

const VOICE_STATUS_TEXT = {
  pending_review: '审核中',
  ready: '可用',
  rejected: '未通过审核',
};

function taskStatusText(status) {
  return TASK_STATUS_TEXT[status] || status;
}

function isFinalTask(task) {
  return FINAL_TASK_STATUSES.indexOf(task.status) !== -1;
}

function taskStage(status) {
  return TASK_STAGE[status] || 0;
}

function voiceStatusText(status) {
  return VOICE_STATUS_TEXT[status] || status;
}

function pad(n) {
  return n < 10 ? `0${n}` : String(n);
}

/** "05-21 14:03" in the phone's time zone, from the API's ISO 8601 timestamps. */
function shortTime(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return '';
  return `${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${pad(at.getHours())}:${pad(at.getMinutes())}`;
}

/**
 * Characters as the server counts them: whitespace runs fold to one space, ends trimmed, and an
 * emoji is one character (Array.from walks code points, not UTF-16 units).
 */
function countChars(text) {
  return Array.from((text || '').replace(/\s+/g, ' ').trim()).length;
}

module.exports = { taskStatusText, isFinalTask, taskStage, voiceStatusText, shortTime, countChars };
