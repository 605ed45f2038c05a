using System.CommandLine;
using System.Text.Json;
using FastMM.Runtime;
using FastMM.Runtime.Images;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm search`: ranks a folder of images for a text query by cosine similarity. Image embeddings are
/// cached per model and folder, so later queries only encode new or changed files.
/// </summary>
internal static class SearchCommand
{
    private static readonly string[] Extensions = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"];
    private const int EncodeBatch = 8;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.ModelWithDefault("shapes-clip");
        var folder = new Option<DirectoryInfo>("--images")
        {
            Description = "folder of images, searched recursively (default: the bundled assets/samples)",
            DefaultValueFactory = _ => new DirectoryInfo(CommonOptions.Bundled(Path.Combine("assets", "samples"), "")),
        };
        var query = new Option<string>("--query", "-q") { Description = "text to search for", Required = true };
        var top = new Option<int>("--top", "-k") { Description = "how many results", DefaultValueFactory = _ => 5 };
        var cacheDir = new Option<string?>("--cache") { Description = "embedding cache folder (default: $FASTMM_CACHE or ~/.cache/fastmm)" };
        var noCache = new Option<bool>("--no-cache") { Description = "encode every image, read and write no cache" };
        var json = new Option<bool>("--json") { Description = "print results as JSON" };
        var cmd = new Command("search", "Rank a folder of images for a text query") { model, folder, query, top, cacheDir, noCache, json };
        cmd.SetHandler(stderr, p =>
        {
            string dir = p.GetValue(folder)!.FullName;
            if (!Directory.Exists(dir)) throw new FastMMException($"{dir}: image folder not found");
            var files = Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
                .Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()) && !Path.GetFileName(f).StartsWith('.'))
                .Order(StringComparer.Ordinal).ToList();
            if (files.Count == 0) throw new FastMMException($"{dir}: no images found (looked for {string.Join(", ", Extensions)})");
            int k = p.GetValue(top);
            if (k < 1) throw new FastMMException($"--top must be at least 1, got {k}");

            using var backend = CommonOptions.CreateBackend(p);
            var bar = new ProgressBar(stderr);
            using var pipe = bar.Run("loading weights", prog => DualEncoderPipeline.Load(p.GetValue(model)!, backend, needText: true, prog, CommonOptions.Policy(p)));
            int d = pipe.Model.EmbedDim;
            var cache = p.GetValue(noCache) ? null : EmbeddingCache.Open(p.GetValue(cacheDir) ?? EmbeddingCache.DefaultDirectory(), pipe.ModelDirectory, dir, d, CommonOptions.Policy(p).ToString());

            var embeddings = new Dictionary<string, float[]>();
            var todo = new List<string>();
            foreach (var f in files)
                if (cache is not null && cache.TryGet(f, out var e)) embeddings[f] = e; else todo.Add(f);
            int skipped = 0;
            if (todo.Count > 0)
            {
                bar.Run($"encoding {todo.Count} image(s)", prog =>
                {
                    for (int start = 0; start < todo.Count; start += EncodeBatch)
                    {
                        var chunk = todo.Skip(start).Take(EncodeBatch).ToList();
                        var ok = new List<(string File, RgbImage Image)>();
                        foreach (var f in chunk)
                        {
                            // One unreadable file must not stop a folder search: say so and go on.
                            try { ok.Add((f, ImageDecoder.Decode(f))); }
                            catch (FastMMException ex) { stderr.WriteLine($"warning: skipping {ex.Message}"); skipped++; }
                        }
                        if (ok.Count > 0)
                        {
                            var e = pipe.EmbedImages(ok.Select(o => o.Image).ToList());
                            for (int i = 0; i < ok.Count; i++)
                            {
                                var v = e.AsSpan(i * d, d).ToArray();
                                embeddings[ok[i].File] = v;
                                cache?.Put(ok[i].File, v);
                            }
                        }
                        prog(Math.Min(start + EncodeBatch, todo.Count), todo.Count);
                    }
                    return 0;
                });
            }
            cache?.Save(files);
            stderr.WriteLine($"{files.Count} image(s): {files.Count - todo.Count} from cache, {todo.Count - skipped} encoded, {skipped} skipped");
            if (embeddings.Count == 0) throw new FastMMException($"{dir}: none of the {files.Count} image(s) could be decoded");

            var q = pipe.EmbedTexts([p.GetValue(query)!]);
            var ranked = embeddings
                .Select(kv => (File: kv.Key, Cosine: System.Numerics.Tensors.TensorPrimitives.Dot(kv.Value, q)))
                .OrderByDescending(r => r.Cosine).ThenBy(r => r.File, StringComparer.Ordinal).Take(k).ToList();
            if (p.GetValue(json))
            {
                stdout.WriteLine(JsonSerializer.Serialize(ranked.Select((r, i) => new
                {
                    rank = i + 1, path = r.File, cosine = r.Cosine, logit = pipe.Model.LogitScale * r.Cosine + pipe.Model.LogitBias,
                }), new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                for (int i = 0; i < ranked.Count; i++)
                    stdout.WriteLine($"{i + 1,3}  {ranked[i].Cosine,8:F4}  {Path.GetRelativePath(dir, ranked[i].File)}");
            }
            return 0;
        });
        return cmd;
    }
}
