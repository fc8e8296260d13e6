/**
 * One InnerAudioContext per page, so two clips never play over each other (A/B listening switches
 * between the sample and the result). Audio URLs are the API's signed links: InnerAudioContext cannot
 * send an Authorization header.
 */

class Player {
  /** `onChange(playingKey, errorMessage)`: playingKey is the key passed to play(), or '' when idle. */
  constructor(onChange) {
    this.onChange = onChange;
    this.key = '';
    this.context = wx.createInnerAudioContext();
    this.context.onPlay(() => this.onChange(this.key, ''));
    this.context.onEnded(() => this.idle(''));
    this.context.onStop(() => this.idle(''));
    this.context.onError(() => this.idle('音频播放失败，请稍后重试'));
  }

  idle(errorMessage) {
    this.key = '';
    this.onChange('', errorMessage);
  }

  /** Play `src` under `key`; playing the same key again stops it (a play button that toggles). */
  toggle(key, src) {
    if (this.key === key) {
      this.context.stop();
      return;
    }
    this.play(key, src);
  }

  /** Play `src` under `key`, whatever was playing (a stopped clip starts from the beginning). */
  play(key, src) {
    this.key = key;
    if (this.context.src !== src) {
      this.context.src = src; // a stopped context starts over from the beginning
    }
    this.context.play();
  }

  stop() {
    if (this.key) this.context.stop();
  }

  destroy() {
    this.context.destroy();
  }
}

module.exports = { Player };
