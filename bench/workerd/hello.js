// The workerd peer of plain-hello: a fixed greeting.
export default {
  async fetch(request) {
    return new Response("hello from a plain workerd worker\n", {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  },
};
