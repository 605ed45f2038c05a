using System.Text.Json;
using System.Text.Json.Nodes;
using FastMM.Models.IO;

namespace FastMM.Models;

/// <summary>
/// Writes random-weight HF folders in real models' exact shapes and configs, so speed can be measured
/// without downloads. Weights are N(0, 0.02) (LayerNorm weights 1, biases 0); outputs are meaningless.
/// </summary>
public static class Synth
{
    private sealed record Arch(string Type, JsonObject Config, JsonObject Preprocessor);

    private static JsonObject ClipConfig(int patch) => new()
    {
        ["architectures"] = new JsonArray("CLIPModel"),
        ["model_type"] = "clip",
        ["projection_dim"] = 512,
        ["logit_scale_init_value"] = 2.6592,
        ["torch_dtype"] = "float32",
        // openai/clip-vit-base-* ship the legacy eos_token_id 2, so pooling uses argmax(input_ids).
        ["text_config"] = new JsonObject
        {
            ["model_type"] = "clip_text_model", ["vocab_size"] = 49408, ["hidden_size"] = 512, ["intermediate_size"] = 2048,
            ["num_hidden_layers"] = 12, ["num_attention_heads"] = 8, ["max_position_embeddings"] = 77, ["hidden_act"] = "quick_gelu",
            ["layer_norm_eps"] = 1e-5, ["bos_token_id"] = 0, ["eos_token_id"] = 2, ["pad_token_id"] = 1, ["projection_dim"] = 512,
        },
        ["vision_config"] = new JsonObject
        {
            ["model_type"] = "clip_vision_model", ["hidden_size"] = 768, ["intermediate_size"] = 3072, ["num_hidden_layers"] = 12,
            ["num_attention_heads"] = 12, ["image_size"] = 224, ["patch_size"] = patch, ["num_channels"] = 3,
            ["hidden_act"] = "quick_gelu", ["layer_norm_eps"] = 1e-5, ["projection_dim"] = 512,
        },
    };

    private static JsonObject ClipPreprocessor() => new()
    {
        ["image_processor_type"] = "CLIPImageProcessor",
        ["do_resize"] = true, ["size"] = new JsonObject { ["shortest_edge"] = 224 }, ["resample"] = 3,
        ["do_center_crop"] = true, ["crop_size"] = new JsonObject { ["height"] = 224, ["width"] = 224 },
        ["do_rescale"] = true, ["rescale_factor"] = 1.0 / 255, ["do_normalize"] = true,
        ["image_mean"] = new JsonArray(0.48145466, 0.4578275, 0.40821073), ["image_std"] = new JsonArray(0.26862954, 0.26130258, 0.27577711),
        ["do_convert_rgb"] = true,
    };

    private static JsonObject SiglipConfig(int imageSize) => new()
    {
        ["architectures"] = new JsonArray("SiglipModel"),
        ["model_type"] = "siglip",
        ["torch_dtype"] = "float32",
        ["text_config"] = new JsonObject
        {
            ["model_type"] = "siglip_text_model", ["vocab_size"] = 32000, ["hidden_size"] = 768, ["intermediate_size"] = 3072,
            ["num_hidden_layers"] = 12, ["num_attention_heads"] = 12, ["max_position_embeddings"] = 64,
            ["hidden_act"] = "gelu_pytorch_tanh", ["layer_norm_eps"] = 1e-6, ["pad_token_id"] = 1, ["eos_token_id"] = 1,
        },
        ["vision_config"] = new JsonObject
        {
            ["model_type"] = "siglip_vision_model", ["hidden_size"] = 768, ["intermediate_size"] = 3072, ["num_hidden_layers"] = 12,
            ["num_attention_heads"] = 12, ["image_size"] = imageSize, ["patch_size"] = 16, ["num_channels"] = 3,
            ["hidden_act"] = "gelu_pytorch_tanh", ["layer_norm_eps"] = 1e-6,
        },
    };

    private static JsonObject SiglipPreprocessor(int imageSize) => new()
    {
        ["image_processor_type"] = "SiglipImageProcessor",
        ["do_resize"] = true, ["size"] = new JsonObject { ["height"] = imageSize, ["width"] = imageSize }, ["resample"] = 3,
        ["do_rescale"] = true, ["rescale_factor"] = 1.0 / 255, ["do_normalize"] = true,
        ["image_mean"] = new JsonArray(0.5, 0.5, 0.5), ["image_std"] = new JsonArray(0.5, 0.5, 0.5), ["do_convert_rgb"] = true,
    };

    /// <summary>HuggingFaceTB/SmolVLM-256M/500M-Instruct: SigLIP-B/16-512 (no head), pixel shuffle ×4, SmolLM2-135M/360M.</summary>
    private static JsonObject SmolVlmConfig(int hidden, int inter, int layers, int heads, int kvHeads) => new()
    {
        ["architectures"] = new JsonArray("Idefics3ForConditionalGeneration"),
        ["model_type"] = "idefics3",
        ["image_token_id"] = 49190,
        ["scale_factor"] = 4,
        ["tie_word_embeddings"] = true,
        ["torch_dtype"] = "float32",
        ["vision_config"] = new JsonObject
        {
            ["model_type"] = "idefics3_vision", ["hidden_size"] = 768, ["intermediate_size"] = 3072, ["num_hidden_layers"] = 12,
            ["num_attention_heads"] = 12, ["image_size"] = 512, ["patch_size"] = 16, ["num_channels"] = 3,
            ["hidden_act"] = "gelu_pytorch_tanh", ["layer_norm_eps"] = 1e-6,
        },
        ["text_config"] = new JsonObject
        {
            ["model_type"] = "llama", ["vocab_size"] = 49280, ["hidden_size"] = hidden, ["intermediate_size"] = inter,
            ["num_hidden_layers"] = layers, ["num_attention_heads"] = heads, ["num_key_value_heads"] = kvHeads,
            ["max_position_embeddings"] = 8192, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 100000, ["hidden_act"] = "silu",
            ["tie_word_embeddings"] = true,
        },
    };

    private static JsonObject SmolVlmPreprocessor() => new()
    {
        ["image_processor_type"] = "Idefics3ImageProcessor",
        ["do_convert_rgb"] = true, ["do_resize"] = true, ["size"] = new JsonObject { ["longest_edge"] = 2048 }, ["resample"] = 1,
        ["do_image_splitting"] = true, ["max_image_size"] = new JsonObject { ["longest_edge"] = 512 },
        ["do_rescale"] = true, ["rescale_factor"] = 1.0 / 255, ["do_normalize"] = true,
        ["image_mean"] = new JsonArray(0.5, 0.5, 0.5), ["image_std"] = new JsonArray(0.5, 0.5, 0.5), ["do_pad"] = true,
    };

    private static readonly Dictionary<string, Func<Arch>> Archs = new()
    {
        ["smolvlm-256m"] = () => new Arch("idefics3", SmolVlmConfig(576, 1536, 30, 9, 3), SmolVlmPreprocessor()),
        ["smolvlm-500m"] = () => new Arch("idefics3", SmolVlmConfig(960, 2560, 32, 15, 5), SmolVlmPreprocessor()),
        ["clip-vit-b32"] = () => new Arch("clip", ClipConfig(32), ClipPreprocessor()),
        ["clip-vit-b16"] = () => new Arch("clip", ClipConfig(16), ClipPreprocessor()),
        ["siglip-b16-224"] = () => new Arch("siglip", SiglipConfig(224), SiglipPreprocessor(224)),
        ["siglip-b16-512"] = () => new Arch("siglip", SiglipConfig(512), SiglipPreprocessor(512)),
    };

    public static IReadOnlyCollection<string> Names => Archs.Keys;

    public static void Write(string arch, string outDir, DType dtype, int seed, Action<int, int>? progress = null)
    {
        if (!Archs.TryGetValue(arch, out var make))
            throw new FastMMException($"unknown --arch '{arch}' (choose one of: {string.Join(", ", Archs.Keys)})");
        var a = make();
        a.Config["torch_dtype"] = dtype switch { DType.F16 => "float16", DType.BF16 => "bfloat16", _ => "float32" };
        Directory.CreateDirectory(outDir);
        var opts = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(Path.Combine(outDir, "config.json"), a.Config.ToJsonString(opts));
        File.WriteAllText(Path.Combine(outDir, "preprocessor_config.json"), a.Preprocessor.ToJsonString(opts));
        var entries = new List<SafetensorsWriter.Entry>();
        var cfg = HfConfig.Load(Path.Combine(outDir, "config.json"));
        var rng = new Random(seed);
        void Add(string name, Func<Random, float> gen, params int[] shape) => AddEntry(name, gen, shape);
        void AddEntry(string name, Func<Random, float> gen, int[] shape)
        {
            int s = rng.Next();
            entries.Add(new(name, dtype, shape, span => { var r = new Random(s); for (int i = 0; i < span.Length; i++) span[i] = gen(r); }));
        }
        float Normal(Random r) => (float)(0.02 * Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble()));
        void Linear(string p, int o, int i, bool bias = true) { Add(p + ".weight", Normal, o, i); if (bias) Add(p + ".bias", Normal, o); }
        void Ln(string p, int d) { Add(p + ".weight", _ => 1f, d); Add(p + ".bias", _ => 0f, d); }
        void Layers(string p, HfConfig c)
        {
            int d = c.Int("hidden_size"), f = c.Int("intermediate_size");
            for (int l = 0; l < c.Int("num_hidden_layers"); l++)
            {
                string q = $"{p}.layers.{l}";
                foreach (var proj in new[] { "q_proj", "k_proj", "v_proj", "out_proj" }) Linear($"{q}.self_attn.{proj}", d, d);
                Ln(q + ".layer_norm1", d); Ln(q + ".layer_norm2", d);
                Linear(q + ".mlp.fc1", f, d); Linear(q + ".mlp.fc2", d, f);
            }
        }
        if (a.Type == "idefics3")
        {
            WriteIdefics3(cfg, AddEntry, Linear, Ln, Layers, Normal);
            SafetensorsWriter.Write(Path.Combine(outDir, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" }, progress);
            File.WriteAllText(Path.Combine(outDir, "processor_config.json"), new JsonObject { ["image_seq_len"] = 64, ["processor_class"] = "Idefics3Processor" }.ToJsonString(opts));
            return;
        }
        var tc = cfg.Section("text_config"); var vc = cfg.Section("vision_config");
        int td = tc.Int("hidden_size"), vd = vc.Int("hidden_size"), patch = vc.Int("patch_size"), img = vc.Int("image_size");
        int patches = (img / patch) * (img / patch);
        Add("text_model.embeddings.token_embedding.weight", Normal, tc.Int("vocab_size"), td);
        Add("text_model.embeddings.position_embedding.weight", Normal, tc.Int("max_position_embeddings"), td);
        Layers("text_model.encoder", tc);
        Ln("text_model.final_layer_norm", td);
        Add("vision_model.embeddings.patch_embedding.weight", Normal, vd, 3, patch, patch);
        Layers("vision_model.encoder", vc);
        Ln("vision_model.post_layernorm", vd);
        if (a.Type == "clip")
        {
            int proj = cfg.Int("projection_dim");
            Add("vision_model.embeddings.class_embedding", Normal, vd);
            Add("vision_model.embeddings.position_embedding.weight", Normal, patches + 1, vd);
            Ln("vision_model.pre_layrnorm", vd);
            Linear("visual_projection", proj, vd, bias: false);
            Linear("text_projection", proj, td, bias: false);
            Add("logit_scale", _ => 2.6592f, []);
        }
        else
        {
            int f = vc.Int("intermediate_size");
            Add("vision_model.embeddings.patch_embedding.bias", Normal, vd);
            Add("vision_model.embeddings.position_embedding.weight", Normal, patches, vd);
            Add("vision_model.head.probe", Normal, 1, 1, vd);
            Linear("vision_model.head.attention.in_proj", 3 * vd, vd);
            entries[^2] = entries[^2] with { Name = "vision_model.head.attention.in_proj_weight" };
            entries[^1] = entries[^1] with { Name = "vision_model.head.attention.in_proj_bias" };
            Linear("vision_model.head.attention.out_proj", vd, vd);
            Ln("vision_model.head.layernorm", vd);
            Linear("vision_model.head.mlp.fc1", f, vd); Linear("vision_model.head.mlp.fc2", vd, f);
            Linear("text_model.head", vd, td);
            Add("logit_scale", _ => MathF.Log(10f), []);
            Add("logit_bias", _ => -10f, []);
        }
        SafetensorsWriter.Write(Path.Combine(outDir, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" }, progress);
    }

    private static void WriteIdefics3(HfConfig cfg, Action<string, Func<Random, float>, int[]> add, Action<string, int, int, bool> linear,
        Action<string, int> ln, Action<string, HfConfig> layers, Func<Random, float> normal)
    {
        var vc = cfg.Section("vision_config"); var tc = cfg.Section("text_config");
        int vd = vc.Int("hidden_size"), patch = vc.Int("patch_size"), img = vc.Int("image_size"), scale = cfg.Int("scale_factor");
        add("model.vision_model.embeddings.patch_embedding.weight", normal, [vd, 3, patch, patch]);
        add("model.vision_model.embeddings.patch_embedding.bias", normal, [vd]);
        add("model.vision_model.embeddings.position_embedding.weight", normal, [(img / patch) * (img / patch), vd]);
        layers("model.vision_model.encoder", vc);
        ln("model.vision_model.post_layernorm", vd);
        int d = tc.Int("hidden_size"), inter = tc.Int("intermediate_size"), heads = tc.Int("num_attention_heads"), kv = tc.Int("num_key_value_heads");
        int hd = d / heads;
        linear("model.connector.modality_projection.proj", d, vd * scale * scale, false);
        add("model.text_model.embed_tokens.weight", normal, [tc.Int("vocab_size"), d]);
        for (int l = 0; l < tc.Int("num_hidden_layers"); l++)
        {
            string p = $"model.text_model.layers.{l}";
            linear(p + ".self_attn.q_proj", heads * hd, d, false);
            linear(p + ".self_attn.k_proj", kv * hd, d, false);
            linear(p + ".self_attn.v_proj", kv * hd, d, false);
            linear(p + ".self_attn.o_proj", d, heads * hd, false);
            linear(p + ".mlp.gate_proj", inter, d, false);
            linear(p + ".mlp.up_proj", inter, d, false);
            linear(p + ".mlp.down_proj", d, inter, false);
            add(p + ".input_layernorm.weight", _ => 1f, [d]);
            add(p + ".post_attention_layernorm.weight", _ => 1f, [d]);
        }
        add("model.text_model.norm.weight", _ => 1f, [d]);
    }
}
