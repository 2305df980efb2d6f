// A rule field shared by the trait and segment forms: it asks the server to validate the rule
// as it is typed (the server's parser is the only one, so the console can never disagree
// with it) and underlines the part the error is at. The API's offsets count UTF-8 bytes,
// JavaScript strings count UTF-16 units, hence the conversion below.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The string index of byte `offset` of `text`'s UTF-8 form (clamped to the text). */
export function byteToIndex(text, offset) {
  const bytes = encoder.encode(text);
  const end = Math.max(0, Math.min(offset, bytes.length));
  // A cut inside a character would decode to U+FFFD; back up to a character boundary.
  let cut = end;
  while (cut > 0 && cut < bytes.length && (bytes[cut] & 0xc0) === 0x80) cut--;
  return decoder.decode(bytes.subarray(0, cut)).length;
}

let serial = 0;

/**
 * A labelled textarea validated through `POST /v1/<kind>/validate` ~300 ms after the last
 * keystroke. `kind` is "traits" or "segments". Returns `{element, textarea, value(),
 * insert(text), validate(), showError(message, offset)}`.
 */
export function ruleEditor(ctx, { kind, label, value, name }) {
  const { h, api } = ctx;
  const id = "rule-" + ++serial;
  const textarea = h("textarea", {
    id, name: name || "rule", rows: 4, spellcheck: "false", autocapitalize: "off",
    autocomplete: "off", "aria-describedby": id + "-error", required: true,
  });
  textarea.value = value || "";
  // The mirror repeats the rule with the erring part wrapped; a screen reader gets the
  // message from the alert instead, so the mirror is hidden from it.
  const mirror = h("pre", { class: "rule-mirror", "aria-hidden": "true", hidden: true });
  const error = h("p", { id: id + "-error", class: "error rule-message", role: "alert" });
  const state = h("span", { class: "muted rule-state", "aria-live": "polite" });
  const element = h("div", { class: "rule-editor" },
    h("label", { for: id }, label || "Rule"), textarea, mirror, error, state);

  let timer = null;
  let asked = 0;

  function clear() {
    error.textContent = "";
    mirror.hidden = true;
    mirror.replaceChildren();
    textarea.removeAttribute("aria-invalid");
  }

  function showError(message, offset) {
    const text = textarea.value;
    error.textContent = message + (typeof offset === "number" ? " (at byte " + offset + ")" : "");
    textarea.setAttribute("aria-invalid", "true");
    if (typeof offset !== "number") {
      mirror.hidden = true;
      return;
    }
    const start = byteToIndex(text, offset);
    // Underline the word the error is at; at the end of the rule, a blank stands for the
    // missing part.
    let end = start;
    while (end < text.length && !/\s/.test(text[end])) end++;
    const bad = end > start ? text.slice(start, end) : "\u00a0";
    mirror.replaceChildren(
      h("span", { class: "rule-before" }, text.slice(0, start)),
      h("span", { class: "rule-error", "data-offset": offset, "data-index": start }, bad),
      h("span", { class: "rule-after" }, text.slice(end)));
    mirror.hidden = false;
  }

  /** Validates now; resolves true when the server accepts the rule. */
  async function validate() {
    clearTimeout(timer);
    const mine = ++asked;
    const code = textarea.value;
    if (code.trim() === "") {
      clear();
      state.textContent = "";
      return false;
    }
    state.textContent = "Checking…";
    try {
      await api("POST", "/v1/" + kind + "/validate", { code });
      if (mine !== asked) return false;
      clear();
      state.textContent = "Rule is valid.";
      return true;
    } catch (e) {
      // An answer to an older version of the text says nothing about this one.
      if (mine !== asked) return false;
      state.textContent = "";
      showError(e.message, e.offset);
      return false;
    }
  }

  textarea.addEventListener("input", () => {
    clearTimeout(timer);
    state.textContent = "";
    timer = setTimeout(validate, 300);
  });

  /** Puts `text` where the cursor was (replacing any selection) and revalidates. */
  function insert(text) {
    const from = textarea.selectionStart ?? textarea.value.length;
    const to = textarea.selectionEnd ?? from;
    const before = textarea.value.slice(0, from);
    const after = textarea.value.slice(to);
    // Keep tokens apart: a trait id glued to a word would be another word.
    const pad = (s, side) => (s === "" || /\s|[()]/.test(side === "l" ? s.slice(-1) : s[0]) ? "" : " ");
    const piece = pad(before, "l") + text + pad(after, "r");
    textarea.value = before + piece + after;
    const at = before.length + piece.length;
    textarea.focus();
    textarea.setSelectionRange(at, at);
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
  }

  if (textarea.value) validate();
  return { element, textarea, value: () => textarea.value, insert, validate, showError,
    stop: () => clearTimeout(timer) };
}
