// Building the page from data without ever parsing data as HTML.
//
// Invariant: every string from the API becomes a text node or an attribute
// value set through the DOM, never markup; no event-handler attribute can be
// set from here. Names, reasons and targets are chosen by callers and
// guests, so they are hostile until shown otherwise.

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'type', 'autocomplete', 'spellcheck']);

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setAttributes(element, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'on') {
      for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    } else if (name === 'class') {
      element.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (/^on/i.test(name)) {
      throw new Error(`refusing to set the event-handler attribute ${name}`);
    } else if (PROPERTIES.has(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

/** An HTML element: `h('td', {class: 'x'}, 'text', child)`. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

/** An SVG element, the same way. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

/** Replaces everything inside `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** A table with a header row and one row per item. */
export function table(headings, rows, attributes = {}) {
  return h('table', attributes,
    h('thead', {}, h('tr', {}, headings.map((heading) => h('th', { scope: 'col' }, heading)))),
    h('tbody', {}, rows));
}

/** A small coloured label. */
export function badge(text, tone) {
  return h('span', { class: ['badge', tone] }, text);
}

/** A button that asks once more before it acts: the first click arms it. */
export function confirmButton(label, confirmLabel, action, attributes = {}) {
  let armed = false;
  let armedAt = 0;
  const disarm = () => {
    armed = false;
    button.textContent = label;
    button.classList.remove('armed');
  };
  const button = h('button', {
    type: 'button',
    ...attributes,
    on: {
      click: async (event) => {
        if (!armed) {
          armed = true;
          armedAt = event.timeStamp;
          button.textContent = confirmLabel;
          button.classList.add('armed');
          return;
        }
        // A double click is one intention, not a confirmation.
        if (event.timeStamp - armedAt < 400) return;
        button.disabled = true;
        try {
          await action();
        } finally {
          button.disabled = false;
          disarm();
        }
      },
      blur: disarm,
    },
  }, label);
  return button;
}
