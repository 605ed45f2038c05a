using System.Text.Json;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Images;

namespace FastMM.Runtime;

/// <summary>One rendered scene of an evaluation folder (the scenes.jsonl written by tools/shapes/render.py).</summary>
public sealed record EvalScene(string Image, string Caption, IReadOnlyList<(string Kind, string Question, string Answer)> Questions);

/// <summary>Accuracy figures of one evaluation run.</summary>
public sealed record EvalReport(string Task, int Items, double Overall, IReadOnlyDictionary<string, (int Correct, int Total)> PerKind);

/// <summary>
/// Shapes World evaluation (shared/SHAPES_WORLD.md): exact-match VQA accuracy per question kind for a generative
/// VLM, and recall@1 over 8 candidate captions ("a photo of …") for a CLIP-style model.
/// </summary>
public static class ShapesEval
{
    public static List<EvalScene> ReadScenes(string folder, int? limit = null)
    {
        string path = Path.Combine(folder, "scenes.jsonl");
        if (!File.Exists(path)) throw new FastMMException($"{folder}: no scenes.jsonl (render one with tools/shapes/render.py)");
        var scenes = new List<EvalScene>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                var r = doc.RootElement;
                var qa = r.GetProperty("qa").EnumerateArray()
                    .Select(q => (q.GetProperty("kind").GetString()!, q.GetProperty("question").GetString()!, q.GetProperty("answer").GetString()!)).ToList();
                scenes.Add(new EvalScene(Path.Combine(folder, r.GetProperty("image").GetString()!), r.GetProperty("caption").GetString()!, qa));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new FastMMException($"{path}:{lineNo}: not a scene record ({e.Message})");
            }
            if (scenes.Count == limit) break;
        }
        if (scenes.Count == 0) throw new FastMMException($"{path}: no scenes");
        return scenes;
    }

    /// <summary>The checker of the spec: lowercase, trim white space, drop one final period.</summary>
    public static string Normalize(string answer)
    {
        string a = answer.Trim().ToLowerInvariant();
        if (a.EndsWith('.')) a = a[..^1].TrimEnd();
        return a;
    }

    /// <summary>Greedy answers to every question of every scene; exact match after <see cref="Normalize"/>.</summary>
    public static EvalReport Vqa(VlmPipeline pipe, IReadOnlyList<EvalScene> scenes, int maxNewTokens = 32, Action<int, int>? progress = null)
    {
        var perKind = new SortedDictionary<string, (int Correct, int Total)>(StringComparer.Ordinal);
        int total = scenes.Sum(s => s.Questions.Count), done = 0, correct = 0;
        foreach (var scene in scenes)
        {
            var image = ImageDecoder.Decode(scene.Image);
            foreach (var (kind, question, answer) in scene.Questions)
            {
                var r = pipe.Ask([new ChatTurn("user", question, [image])], SamplingOptions.Greedy, maxNewTokens);
                bool ok = Normalize(r.Text) == Normalize(answer);
                var k = perKind.GetValueOrDefault(kind);
                perKind[kind] = (k.Correct + (ok ? 1 : 0), k.Total + 1);
                if (ok) correct++;
                progress?.Invoke(++done, total);
            }
        }
        return new EvalReport("vqa", total, (double)correct / total, perKind);
    }

    /// <summary>
    /// For each scene: its own "a photo of" caption and 7 distinct captions of other scenes (a fixed-seed draw);
    /// a hit when the image's logit for its own caption is strictly the highest.
    /// </summary>
    public static EvalReport Retrieval(DualEncoderPipeline pipe, IReadOnlyList<EvalScene> scenes, int candidates = 8, int seed = 0, Action<int, int>? progress = null)
    {
        var captions = scenes.Select(s => "a photo of " + s.Caption).Distinct().ToList();
        if (captions.Count < candidates) throw new FastMMException($"recall@1 over {candidates} candidates needs at least {candidates} distinct captions; the folder has {captions.Count}");
        int d = pipe.Model.EmbedDim;
        var textEmb = new float[captions.Count * d];
        for (int i = 0; i < captions.Count; i += 32)
        {
            var chunk = captions.Skip(i).Take(32).ToList();
            pipe.EmbedTexts(chunk).CopyTo(textEmb.AsSpan(i * d));
        }
        var index = captions.Select((c, i) => (c, i)).ToDictionary(x => x.c, x => x.i);
        var rng = new Random(seed);
        int hits = 0;
        for (int s = 0; s < scenes.Count; s++)
        {
            var img = pipe.EmbedImages([ImageDecoder.Decode(scenes[s].Image)]);
            int own = index["a photo of " + scenes[s].Caption];
            var others = Enumerable.Range(0, captions.Count).Where(i => i != own).OrderBy(_ => rng.Next()).Take(candidates - 1);
            var cand = new[] { own }.Concat(others).ToArray();
            var texts = new float[cand.Length * d];
            for (int j = 0; j < cand.Length; j++) textEmb.AsSpan(cand[j] * d, d).CopyTo(texts.AsSpan(j * d));
            var logits = pipe.Model.Logits(img, 1, texts, cand.Length);
            if (logits.Skip(1).All(l => logits[0] > l)) hits++;
            progress?.Invoke(s + 1, scenes.Count);
        }
        return new EvalReport($"recall@1 of {candidates}", scenes.Count, (double)hits / scenes.Count,
            new Dictionary<string, (int, int)> { ["retrieval"] = (hits, scenes.Count) });
    }
}
