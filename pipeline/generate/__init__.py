"""The steps that write rows, and what they share.

- ``personas``: the persona collection and the step that attaches a passage's top-k;
- ``configure``, ``query``: the paper's two calls for retrieval rows (persona and settings, then the query);
- ``bitext``, ``classification``, ``sts``: the other task types;
- ``negatives``: hard negatives written by the LLM and mined from the corpus;
- ``llm_call``: one structured LLM call for a batch of rows, its stats and its checks;
- ``rows``: a passage's starting rows; ``sampling``: every seeded draw;
- ``prompts``: the Jinja templates; ``replies``: the JSON schemas the replies must fit;
- ``budgets``: token budgets per reply; ``labels``: the classification label set;
- ``instructions``: the query-side instruction of every row.
"""
