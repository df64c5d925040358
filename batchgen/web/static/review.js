const token = document.querySelector('meta[name=batchgen-token]').content;
const notice = document.getElementById('notice');
function say(text) { notice.textContent = text; }
async function send(figure, fields, tries = 0) {
  let answer;
  try {
    answer = await fetch('/api/review', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-Batchgen-Token': token},
                                          body: JSON.stringify({key: figure.dataset.key, ...fields})});
  } catch (error) { say('The review server is not answering: is batchgen review still running?'); return; }
  if (answer.status === 503 && tries < 10) { say('The ledger is busy (a run is writing); trying again…'); setTimeout(() => send(figure, fields, tries + 1), 1000); return; }
  const result = await answer.json().catch(() => ({error: answer.statusText}));
  if (!answer.ok) { say(result.error || answer.statusText); return; }
  say('');
  showReview(figure, result.review);
}
function showReview(figure, review) {
  figure.dataset.pick = review.pick === null || review.pick === undefined ? '' : String(review.pick);
  figure.querySelector('button.pick').setAttribute('aria-pressed', String(review.pick === 1));
  figure.querySelector('button.reject').setAttribute('aria-pressed', String(review.pick === 0));
  for (const star of figure.querySelectorAll('button.star')) star.setAttribute('aria-pressed', String(!!review.rating && Number(star.dataset.rating) <= review.rating));
  const note = figure.querySelector('textarea.note');
  if (document.activeElement !== note) note.value = review.note || '';
  figure.dataset.rating = review.rating || '';
}
document.addEventListener('click', event => {
  const button = event.target.closest('.marks button');
  if (!button) return;
  const figure = button.closest('figure');
  if (button.classList.contains('pick')) send(figure, {pick: figure.dataset.pick === '1' ? null : 1});
  else if (button.classList.contains('reject')) send(figure, {pick: figure.dataset.pick === '0' ? null : 0});
  else if (button.classList.contains('star')) {
    const n = Number(button.dataset.rating);
    send(figure, {rating: Number(figure.dataset.rating) === n ? null : n});
  }
});
document.addEventListener('change', event => {
  if (event.target.matches('textarea.note')) send(event.target.closest('figure'), {note: event.target.value});
});
for (const figure of document.querySelectorAll('figure')) {
  const on = figure.querySelectorAll('button.star[aria-pressed=true]').length;
  figure.dataset.rating = on || '';
}
async function follow() {
  try {
    const answer = await fetch('/api/tiles' + location.search, {headers: {'X-Batchgen-Token': token}});  // this page's
    if (answer.status === 403) { say((await answer.json()).error); return; }
    if (answer.ok) {
      const state = await answer.json();
      document.getElementById('summary').textContent = state.summary;
      let fresh = 0;
      for (const tile of state.tiles) {
        const figure = document.querySelector(`figure[data-key="${tile.key}"]`);
        if (!figure) { fresh++; continue; }
        if (figure.dataset.media !== tile.media_html) {
          if (figure.dataset.media !== undefined) { figure.querySelector('.media').innerHTML = tile.media_html; watchVideos(figure); }
          figure.dataset.media = tile.media_html;
        }
        figure.className = 'tile ' + tile.outcome.replace(/ /g, '-') + (figure.classList.contains('hidden') ? ' hidden' : '');
        figure.querySelector('.status').textContent = tile.outcome;
        showReview(figure, tile.review);
      }
      if (fresh) say(`${fresh} new requests in this job: reload the page to see them.`);
      applyFilter();
    }
  } catch (error) { say('The review server is not answering: is batchgen review still running?'); }
  setTimeout(follow, 3000);
}
setTimeout(follow, 3000);
