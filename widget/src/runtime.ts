// The assistant-ui runtime for one conversation: assistant-ui's local runtime (`useLocalRuntime`)
// driven by our ChatModelAdapter (adapter.ts), which speaks leadchat's SSE contract.
//
// Size note (measured with scripts/build.mjs): `useLocalRuntime` wraps the local runtime in the
// remote-thread-list machinery with Assistant Cloud support, which the widget does not use; building
// LocalRuntimeCore directly from @assistant-ui/core/internal would make the panel ~29 KiB (gzip)
// smaller (173.7 → 144.8 KiB). The public API fits the 180 KiB budget, so the widget stays on it.
import type { AssistantRuntime, ChatModelAdapter } from "@assistant-ui/react";
import { useLocalRuntime } from "@assistant-ui/react";

export function useChatRuntime(chatModel: ChatModelAdapter): AssistantRuntime {
  return useLocalRuntime(chatModel);
}
