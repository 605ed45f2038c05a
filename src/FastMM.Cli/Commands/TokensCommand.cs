using System.CommandLine;
using FastMM.Runtime;
using FastMM.Runtime.Images;

namespace FastMM.Cli.Commands;

/// <summary>`fastmm tokens`: how many tokens a prompt with images takes (text and image tokens), without running the model.</summary>
internal static class TokensCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.Model();
        var images = new Option<string[]>("--image") { Description = "image file (repeat for several)" };
        var question = new Argument<string>("question") { Description = "the prompt text" };
        var system = new Option<string?>("--system") { Description = "a system message" };
        var cmd = new Command("tokens", "Count the tokens a prompt + images will take in the context window") { model, images, question, system };
        cmd.SetHandler(stderr, p =>
        {
            using var backend = CommonOptions.CreateBackend(p);
            var imgs = (p.GetValue(images) ?? []).Select(ImageDecoder.Decode).ToList();
            using var pipe = AskCommand.Load(p, model, backend, stderr);
            var prep = pipe.Prepare(AskCommand.Conversation(p.GetValue(system), p.GetValue(question)!, imgs));
            stdout.WriteLine($"prompt_tokens  {prep.Ids.Length}");
            stdout.WriteLine($"text_tokens    {prep.Ids.Length - prep.ImageTokens}");
            stdout.WriteLine($"image_tokens   {prep.ImageTokens} ({prep.Images} image(s))");
            stdout.WriteLine($"context_window {pipe.Generator.ContextWindow}");
            stdout.WriteLine($"room_left      {pipe.Generator.ContextWindow - prep.Ids.Length}");
            return 0;
        });
        return cmd;
    }
}
