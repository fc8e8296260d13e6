/**
 * The speaker's consent, asked before every voice upload (《互联网信息服务深度合成管理规定》第十四条:
 * a service that edits someone's voice must prompt the user to inform that person and obtain their
 * separate consent). Sent as `consent`; the server refuses an upload without it (`consent_required`).
 * The same wording is in the README, for the operator's user agreement, and on the H5 page.
 */
const CONSENT_PROMPT =
  '根据《互联网信息服务深度合成管理规定》，使用他人的声音须告知声音主人并取得其单独同意。上传前请确认：';

const CONSENT_OPTIONS = [
  { value: 'self', label: '本人', text: '这是我本人的声音' },
  { value: 'authorized', label: '已获授权', text: '这是他人的声音，我已告知声音主人并取得其单独同意' },
];

// What the page shows before an upload with no choice made (the server's own message for it).
const CONSENT_MISSING = '请先确认已获得声音主人的同意';

module.exports = { CONSENT_PROMPT, CONSENT_OPTIONS, CONSENT_MISSING };
