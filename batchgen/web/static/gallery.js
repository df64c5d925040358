const filter = document.getElementById('filter');
const pickedOnly = document.getElementById('picked-only');
function applyFilter() {
  const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of document.querySelectorAll('tbody tr, section.row')) {
    let shown = 0;
    const rowText = row.querySelector('th, h2').textContent.toLowerCase();
    for (const tile of row.querySelectorAll('figure')) {
      const note = tile.querySelector('textarea.note');  // a note written since the page was made
      const text = rowText + ' ' + tile.dataset.search + (note ? ' ' + note.value.toLowerCase() : '');
      const match = words.every(w => text.includes(w)) && (!pickedOnly.checked || tile.dataset.pick === '1');
      tile.classList.toggle('hidden', !match);
      shown += match;
    }
    row.classList.toggle('hidden', shown === 0);
  }
  // Columns left with nothing to show collapse too.
  const head = document.querySelectorAll('thead th');
  for (let i = 1; i < head.length; i++) {
    const cells = document.querySelectorAll(`tbody tr:not(.hidden) td:nth-child(${i + 1})`);
    const empty = [...cells].every(td => !td.querySelector('figure:not(.hidden)'));
    head[i].classList.toggle('hidden', empty);
    for (const td of document.querySelectorAll(`tbody td:nth-child(${i + 1})`)) td.classList.toggle('hidden', empty);
  }
}
filter.addEventListener('input', applyFilter);
pickedOnly.addEventListener('change', applyFilter);
function showDuration(video) {
  video.dataset.duration = video.duration.toFixed(2);
  // The cell keeps the video's own shape, whatever the request asked for.
  if (video.videoWidth && video.videoHeight) video.closest('figure').style.setProperty('--aspect', `${video.videoWidth} / ${video.videoHeight}`);
  const badge = video.closest('figure').querySelector('.duration');
  if (badge) badge.textContent = '· ' + video.duration.toFixed(1) + ' s';
}
function watchVideos(root) {
  for (const video of root.querySelectorAll('video')) {
    if (video.readyState >= 1) showDuration(video);
    video.addEventListener('loadedmetadata', () => showDuration(video));
    video.addEventListener('error', () => { video.closest('figure').classList.add('broken'); video.dataset.error = '1'; });
  }
}
watchVideos(document);
