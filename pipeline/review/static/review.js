// synth review: label the row on this page with the keyboard, save it, go to the next open row.
// Keys: g good pair, q bad query, p positive does not answer it, s skip, 1-9 mark a negative
// that answers the query (press again to unmark), n note, Escape leave the note, arrows move.
(function () {
  "use strict";
  const state = JSON.parse(document.getElementById("row-state").textContent);
  const note = document.getElementById("note");
  const status = document.getElementById("status");
  const marks = new Set(state.saved ? state.saved.false_negatives : []);
  const keys = { g: "good", q: "bad_query", p: "not_answered", s: "skip" };
  let sending = false;

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    let id = "";
    for (let i = 0; i < 32; i++) id += Math.floor(Math.random() * 16).toString(16);
    return id;
  }

  function toggle(index) {
    if (index >= state.negatives) return;
    if (marks.has(index)) marks.delete(index);
    else marks.add(index);
    const item = document.querySelector(`#negatives li[data-index="${index}"]`);
    if (item) item.classList.toggle("answers", marks.has(index));
  }

  async function save(verdict) {
    if (sending) return;
    sending = true;
    // one id per decision: a resend after a lost reply is counted once by the server
    const body = {
      decision_id: newId(),
      row_id: state.row_id,
      verdict: verdict,
      false_negatives: Array.from(marks).sort((a, b) => a - b),
      note: note.value.trim() || null,
    };
    status.textContent = "saving...";
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const reply = await fetch("/api/labels", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        const answer = await reply.json();
        if (!reply.ok) {
          status.textContent = "not saved: " + answer.error;
          sending = false;
          return;
        }
        status.textContent = "saved";
        window.location.assign(answer.next === null ? "/done" : "/row/" + answer.next);
        return;
      } catch (error) {
        status.textContent = "the server did not answer; trying again...";
        await new Promise((done) => setTimeout(done, 500 * (attempt + 1)));
      }
    }
    status.textContent = "not saved: the server is not answering (is `synth review` still running?)";
    sending = false;
  }

  function go(position) {
    if (position !== null) window.location.assign("/row/" + position);
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target === note) {
      if (event.key === "Escape" || event.key === "Enter") note.blur();
      return;
    }
    const key = event.key;
    if (key in keys) save(keys[key]);
    else if (/^[1-9]$/.test(key)) toggle(Number(key) - 1);
    else if (key === "n") note.focus();
    else if (key === "ArrowRight") go(state.next);
    else if (key === "ArrowLeft") go(state.previous);
    else return;
    event.preventDefault();
  });

  document.querySelectorAll("button[data-verdict]").forEach((button) => {
    button.addEventListener("click", () => save(button.dataset.verdict));
  });
  document.querySelectorAll("#negatives li").forEach((item) => {
    item.addEventListener("click", () => toggle(Number(item.dataset.index)));
  });
})();
