# tests/page.py - what a page made by `greylistctl report --html` shows,
# read from the DOM a browser built of it (chromium --dump-dom) on stdin:
# one "name=value" line each, for tests/observe.sh to compare with the
# text report
import sys
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.text = [], {}
        self.tiles, self.rows, self.tops, self.fetching = {}, [], [], []
        self.elements = {}
        self.row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements[tag] = self.elements.get(tag, 0) + 1
        self.fetching += [f"{tag} {k}" for k in a if k in ("src", "href", "srcset", "data", "poster")]
        if tag == "tr":
            self.row = []
        self.stack.append((tag, a, []))

    def handle_endtag(self, tag):
        while self.stack:
            t, a, text = self.stack.pop()
            s = "".join(text)
            if self.stack:
                self.stack[-1][2].append(s)
            if t == "code" and a.get("class") == "summary":
                self.text["summary"] = s
            if t == "b" and "id" in a:
                self.tiles[a["id"]] = s.replace(",", "")
            if t == "td" and self.row is not None:
                self.row.append(s)
            if t == "tr" and self.row:
                (self.tops if len(self.row) == 3 else self.rows).append(self.row)
                self.row = None
            if t == tag:
                break

    def handle_data(self, data):
        if self.stack:
            self.stack[-1][2].append(data)


p = Page()
p.feed(sys.stdin.read())
print("summary=" + p.text.get("summary", ""))
for k in ("deferred", "passed_later", "never_retried", "pending"):
    print(f"tile_{k}=" + p.tiles.get(k, ""))
# the bars' table: from, deferred, passed later, never retried, pending
sums = [sum(int(r[i]) for r in p.rows) for i in range(1, 5)] if p.rows else []
print("bars=%d" % len(p.rows))
print("bars_sum=" + " ".join(map(str, sums)))
print("tops=" + "|".join(f"{r[0]} {r[2]}" for r in p.tops))
print("fetching=" + " ".join(p.fetching))
print("scripts=%d" % (p.elements.get("script", 0) + p.elements.get("iframe", 0)
                      + p.elements.get("object", 0) + p.elements.get("embed", 0)
                      + p.elements.get("img", 0) + p.elements.get("link", 0)))
