/**
 * Sentences shown on the recording page. The user reads one aloud and it is sent as `prompt_text`,
 * the transcript the engine aligns the voice with: a sentence read exactly beats free speech. Each
 * takes 5–10 s at a calm pace and covers varied sounds and tones. The first one suggested is itself
 * a consent statement in the speaker's own voice (utils/consent.js asks for consent in writing).
 */
const CONSENT_SENTENCE = '我是本人，同意用我的声音生成语音。';
const FIRST_SENTENCE = `${CONSENT_SENTENCE}今天天气很好，我们一起去公园散步吧。`;

const SENTENCES = [
  FIRST_SENTENCE,
  '今天天气很好，我们一起去公园散步，顺便买一杯热咖啡吧。',
  '春天来了，河边的柳树发出了新芽，小鸟在枝头欢快地唱歌。',
  '请把桌上的那本书递给我，我想再读一遍里面的故事。',
  '周末我打算早点起床，先跑步半小时，然后去菜市场买菜。',
  '这座城市的夜景非常漂亮，灯光把整条江面都照亮了。',
  '谢谢你一直以来的帮助，有空的时候我请你吃饭。',
];

/** A sentence other than `current`, at random. */
function nextSentence(current) {
  const others = SENTENCES.filter((s) => s !== current);
  return others[Math.floor(Math.random() * others.length)];
}

module.exports = { nextSentence, SENTENCES, CONSENT_SENTENCE, FIRST_SENTENCE };
