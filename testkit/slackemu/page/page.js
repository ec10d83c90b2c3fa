// The emulator page: live updates over SSE, the composer, buttons with
// confirm dialogs, modals. Plain JavaScript, no build step.
(() => {
  "use strict";
  const as = document.body.dataset.as;
  const channel = document.body.dataset.channel;
  const $ = (sel, el = document) => el.querySelector(sel);
  const list = $("#messages");
  let last = { modalKey: null };

  async function post(path, body) {
    try {
      const r = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign({ as, channel }, body)),
      });
      return await r.json();
    } catch (e) {
      return { ok: false, error: "the emulator did not answer: " + e };
    }
  }

  let toastTimer;
  function toast(msg) {
    const t = $("#toast");
    t.textContent = msg;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  // --- live state -------------------------------------------------------
  function applyState(st) {
    if (st.messages !== last.messages) {
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
      list.innerHTML = st.messages;
      if (atBottom || last.messages === undefined) list.scrollTop = list.scrollHeight;
    }
    if (st.status !== last.status) $("#bot-status").innerHTML = st.status;
    if (st.scheduled !== last.scheduled) $("#scheduled").innerHTML = st.scheduled;
    if (st.modalKey !== last.modalKey) renderModal(st);
    last = st;
  }

  function renderModal(st) {
    const root = $("#modal-root");
    const prev = $(".modal", root);
    const saved = {};
    const sameView = prev && prev.dataset.view === st.modalView;
    if (sameView) {
      prev.querySelectorAll(".sk-field-input").forEach((i) => { saved[i.dataset.block + "/" + i.dataset.action] = i.value; });
    }
    root.innerHTML = st.modal || "";
    const form = $(".modal", root);
    if (!form) return;
    form.querySelectorAll(".sk-field-input").forEach((i) => {
      const k = i.dataset.block + "/" + i.dataset.action;
      if (k in saved) i.value = saved[k];
    });
    if (!sameView) {
      const first = $(".sk-field-input", form);
      if (first) first.focus();
    } else {
      const bad = $(".has-error .sk-field-input", form);
      if (bad) bad.focus();
    }
  }

  function connect() {
    const es = new EventSource(`/ui/events?channel=${encodeURIComponent(channel)}&as=${encodeURIComponent(as)}`);
    es.addEventListener("state", (e) => {
      document.body.classList.remove("offline");
      applyState(JSON.parse(e.data));
    });
    es.onerror = () => document.body.classList.add("offline");
  }
  // The server rendered the first state; mark it as applied.
  last.messages = list.innerHTML;
  last.status = $("#bot-status").innerHTML;
  last.scheduled = $("#scheduled").innerHTML;
  const firstModal = $("#modal-root .modal");
  last.modalKey = firstModal ? "server:" + firstModal.dataset.view : "";
  list.scrollTop = list.scrollHeight;
  connect();

  // --- composer ---------------------------------------------------------
  const input = $("#composer-input");
  const sendBtn = $("#composer-send");
  const errBox = $("#composer-error");
  const grow = () => {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 160) + "px";
    sendBtn.classList.toggle("ready", input.value.trim() !== "");
  };
  input.addEventListener("input", grow);
  const sendKey = (e) => e.key === "Enter" && !e.shiftKey && !e.isComposing;
  input.addEventListener("keydown", (e) => {
    if (sendKey(e)) {
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  // The Enter that sent may still arrive as its own keypress (a driver
  // such as chromedp sends the character apart from the key): it must not
  // leave a newline in the cleared composer.
  input.addEventListener("keypress", (e) => {
    if (sendKey(e)) e.preventDefault();
  });
  $("#composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || input.disabled) return;
    input.disabled = true;
    errBox.hidden = true;
    const res = await post("/ui/send", { text });
    input.disabled = false;
    if (res.ok) {
      input.value = "";
      grow();
    } else {
      errBox.textContent = res.error;
      errBox.hidden = false;
    }
    input.focus();
  });
  input.focus();

  // --- buttons and confirm dialogs --------------------------------------
  const dialog = $("#confirm-dialog");
  let pending = null;

  async function click(btn) {
    const msg = btn.closest("[data-ts]");
    if (!msg) return;
    btn.classList.add("busy");
    const res = await post("/ui/click", { ts: msg.dataset.ts, action: btn.dataset.action });
    btn.classList.remove("busy");
    if (!res.ok) toast(res.error);
    if (btn.dataset.url) window.open(btn.dataset.url, "_blank", "noopener");
  }

  function openConfirm(btn) {
    const tpl = btn.parentElement.querySelector("template.confirm-tpl");
    $(".dialog-content", dialog).replaceChildren(tpl.content.cloneNode(true));
    pending = btn;
    dialog.hidden = false;
    $(".confirm-ok", dialog).focus();
  }

  function closeConfirm() {
    dialog.hidden = true;
    pending = null;
  }

  dialog.addEventListener("click", (e) => {
    if (e.target.closest(".confirm-ok")) {
      const btn = pending;
      closeConfirm();
      if (btn) click(btn);
    } else if (e.target.closest(".confirm-deny") || e.target === dialog) {
      closeConfirm();
    }
  });

  list.addEventListener("click", (e) => {
    const btn = e.target.closest("button[data-action]");
    if (!btn || btn.disabled) return;
    if (btn.dataset.confirm) openConfirm(btn);
    else click(btn);
  });

  // --- modals -----------------------------------------------------------
  const modalRoot = $("#modal-root");
  modalRoot.addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.target.closest(".modal");
    const values = {};
    form.querySelectorAll(".sk-field-input").forEach((i) => {
      (values[i.dataset.block] = values[i.dataset.block] || {})[i.dataset.action] = i.value;
    });
    const btn = $(".modal-submit", form);
    if (btn) btn.classList.add("busy");
    const res = await post("/ui/submit", { view: form.dataset.view, values });
    if (btn) btn.classList.remove("busy");
    if (!res.ok) toast(res.error);
  });
  modalRoot.addEventListener("click", async (e) => {
    if (!e.target.closest(".modal-close, .modal-x")) return;
    const form = e.target.closest(".modal");
    const res = await post("/ui/close", { view: form.dataset.view });
    if (!res.ok) toast(res.error);
  });

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !dialog.hidden) closeConfirm();
  });
})();
