// Drives human/form.html's script without a browser: a minimal DOM, one click per item, then "download".
// Usage: node form_driver.js FORM.html CHOICES.json RATER  -> prints the CSV the page would download.
const fs = require("fs");
const [form, choicesPath, rater] = process.argv.slice(2);
const html = fs.readFileSync(form, "utf8");
const script = html.slice(html.indexOf("<script>") + 8, html.indexOf("</script>"));
const wanted = JSON.parse(fs.readFileSync(choicesPath, "utf8"));
const elements = {};
const items = [];
function element(id) {
  const el = {
    id, className: "", textContent: "", value: "", children: [], handlers: {},
    classList: { add() {} },
    set innerHTML(text) {
      this._html = text;
      // One radio input per choice, named after the item (the page renders them in innerHTML).
      this.inputs = [...text.matchAll(/<input type="radio" name="([^"]+)" value="([^"]+)">/g)].map((m) => ({
        name: m[1], value: m[2], handlers: {}, addEventListener(kind, f) { this.handlers[kind] = f; },
      }));
    },
    get innerHTML() { return this._html || ""; },
    querySelectorAll() { return this.inputs || []; },
    appendChild(child) { this.children.push(child); items.push(child); },
    addEventListener(kind, f) { this.handlers[kind] = f; },
    click() {},
  };
  return el;
}
for (const id of ["items", "progress", "rater", "download"]) elements[id] = element(id);
let downloaded = null;
global.document = {
  getElementById: (id) => elements[id],
  createElement: (tag) => {
    const el = element(tag);
    if (tag === "div") {
      // esc() sets textContent and reads innerHTML: escape like a browser would.
      Object.defineProperty(el, "textContent", {
        set(text) { el._html = String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); },
        get() { return ""; },
      });
    }
    return el;
  },
};
global.alert = (message) => { throw new Error(message); };
global.Blob = function (parts) { downloaded = parts.join(""); };
global.URL = { createObjectURL: () => "blob:" };
eval(script);
for (const item of items) {
  const choice = wanted[item.inputs[0].name];
  const input = item.inputs.find((i) => i.value === choice);
  if (input) input.handlers.change();
}
elements.rater.value = rater;
elements.download.handlers.click();
process.stdout.write(downloaded);
