// Toasts and dialogs shared by every page.

import { h, icon } from "./dom.js";

export function toast(message, { error = false } = {}) {
  const node = h(
    "div",
    { class: ["toast", error && "error"] },
    icon(error ? "alert" : "check", 15),
    h("span", {}, message),
  );
  document.querySelector(".toasts").append(node);
  setTimeout(() => node.remove(), error ? 7000 : 3500);
}

/** A modal dialog: resolves with what `submit` returns, or null when dismissed.
 * submit(form) may throw to keep the dialog open and show the message. */
export function modal({
  title,
  description,
  body,
  confirm = "Save",
  dismiss = "Cancel",
  danger = false,
  wide = false,
  submit,
}) {
  return new Promise((resolve) => {
    const error = h("div", { class: "form-error", role: "alert" });
    const confirmButton = h(
      "button",
      { type: "submit", class: danger ? "danger solid" : "primary" },
      confirm,
    );
    const form = h(
      "form",
      { method: "dialog" },
      h("div", { class: "modal-head" }, h("h2", {}, title), description && h("p", {}, description)),
      h("div", { class: "modal-body" }, body, error),
      h(
        "div",
        { class: "modal-foot" },
        h("button", { type: "button", class: "ghost", onclick: () => dialog.close() }, dismiss),
        confirmButton,
      ),
    );
    const dialog = h("dialog", { class: ["modal", wide && "wide"] }, form);
    let result = null;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      confirmButton.disabled = true;
      error.textContent = "";
      try {
        result = (await submit?.(form)) ?? true;
        dialog.close();
      } catch (failure) {
        error.textContent = failure.message;
      } finally {
        confirmButton.disabled = false;
      }
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector("textarea, input, select")?.focus();
  });
}

/** The API key prompt: resolves true when a key was entered. */
export async function askForKey(refused, save) {
  const input = h("input", {
    type: "password",
    name: "key",
    autocomplete: "off",
    placeholder: "PERDURE_API_KEY",
    "aria-label": "API key",
    style: { width: "100%" },
  });
  const entered = await modal({
    title: refused ? "That API key was refused" : "API key required",
    description:
      "This perdure server asks for an API key (PERDURE_API_KEY). It is kept in this browser " +
      "and sent as a bearer token.",
    body: input,
    confirm: "Continue",
    submit: () => {
      const key = input.value.trim();
      if (!key) throw new Error("Enter the key.");
      save(key);
      return key;
    },
  });
  return Boolean(entered);
}

export function confirmAction({ title, description, confirm, dismiss, danger = true, action }) {
  return modal({ title, description, confirm, dismiss, danger, submit: action });
}
