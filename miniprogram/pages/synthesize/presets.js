/** Style presets from GET /v1/presets, grouped by kind for one picker per kind. */

const KINDS = [
  { kind: 'dialect', title: '方言' },
  { kind: 'emotion', title: '情绪' },
  { kind: 'speed', title: '语速' },
  { kind: 'volume', title: '音量' },
];
const NONE = '不使用';

/** `[{kind, title, names, ids, index}]`; option 0 of every group is "none". */
function groupPresets(presets) {
  return KINDS.map(({ kind, title }) => {
    const mine = presets.filter((p) => p.kind === kind);
    return {
      kind,
      title,
      names: [NONE, ...mine.map((p) => p.name)],
      ids: ['', ...mine.map((p) => p.id)],
      index: 0,
    };
  }).filter((group) => group.ids.length > 1);
}

/**
 * Groups after choosing option `index` of `kind`: the API takes a single instruction, so choosing in
 * one group resets the others. Also returns the chosen preset (`id` '' for none).
 */
function choosePreset(groups, kind, index) {
  const chosen = { id: '', name: '' };
  const next = groups.map((group) => {
    if (group.kind !== kind) return { ...group, index: 0 };
    chosen.id = group.ids[index] || '';
    chosen.name = chosen.id ? group.names[index] : '';
    return { ...group, index: chosen.id ? index : 0 };
  });
  return { groups: next, preset: chosen };
}

module.exports = { groupPresets, choosePreset };
